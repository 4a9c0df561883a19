//! The `eventfold` binary links no benchmark machinery, and broker clients only through the
//! broker adapters: its normal dependencies (not dev, not build), followed transitively through
//! `cargo metadata`'s resolve graph, reach none of the benchmarks' crates, and each broker client
//! (redis, lapin, async-nats, rdkafka) only as the dependency of its adapter
//! (`eventfold-transport-*`, which `eventfold relay` publishes through). The PostgreSQL store's
//! own driver (tokio-postgres, deadpool-postgres) is linked too: the server runs on it.

use std::collections::{HashMap, VecDeque};
use std::process::Command;

use serde_json::Value;

/// Crates the product must not link: the benchmarks' SQLite rival, histogram, and the
/// benchmark crate that holds them. tokio-postgres is not here: it is the driver of
/// `eventfold-store-postgres`, which `eventfold serve --store postgres://…` runs on.
const FORBIDDEN: &[&str] = &["rusqlite", "hdrhistogram", "eventfold-bench"];

/// Each broker client and the one crate that may depend on it: its adapter. Anything else
/// using a broker client directly (the CLI, the relay, the server) is a second owner of that
/// broker's protocol, or a benchmark's rival client leaking into the product.
const BROKER_CLIENTS: &[(&str, &str)] = &[
    ("redis", "eventfold-transport-redis"),
    ("lapin", "eventfold-transport-rabbitmq"),
    ("async-nats", "eventfold-transport-nats"),
    ("rdkafka", "eventfold-transport-kafka"),
];

/// Runs `cargo ARGS` and returns its standard output.
fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(cargo).args(args).output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo prints UTF-8")
}

/// `cargo metadata` of the workspace for the host platform (as `cargo build` builds it, and so
/// that dependencies of other platforms, never downloaded here, are not needed), offline and
/// with the committed lockfile as it is, so the test never touches the network and never
/// rewrites `Cargo.lock`.
fn metadata() -> Value {
    let version = cargo(&["-vV"]);
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("`cargo -vV` names the host platform");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let json = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--locked",
        "--filter-platform",
        host,
        "--manifest-path",
        manifest,
    ]);
    serde_json::from_str(&json).expect("cargo metadata prints JSON")
}

/// Package id → package name, for every package in `meta`.
fn package_names(meta: &Value) -> HashMap<&str, &str> {
    meta["packages"]
        .as_array()
        .expect("packages is an array")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("package id"),
                p["name"].as_str().expect("package name"),
            )
        })
        .collect()
}

/// Whether a resolve node's dependency `dep` is a normal one (its `kind` is null; "dev" or
/// "build" otherwise) in at least one of its kinds.
fn is_normal(dep: &Value) -> bool {
    dep["dep_kinds"]
        .as_array()
        .expect("dep_kinds is an array")
        .iter()
        .any(|k| k["kind"].is_null())
}

/// Every package reachable from `root` over normal dependency edges, each with the path of
/// package names that first reached it (breadth first, so a shortest path).
fn normal_closure(meta: &Value, root: &str) -> HashMap<String, Vec<String>> {
    let names = package_names(meta);
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes is an array")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let root_id = names
        .iter()
        .find(|(_, name)| **name == root)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{root} is not a package of the workspace"));

    let mut reached: HashMap<String, Vec<String>> = HashMap::new();
    reached.insert(root_id.to_owned(), vec![root.to_owned()]);
    let mut queue = VecDeque::from([root_id]);
    while let Some(id) = queue.pop_front() {
        let path = reached[id].clone();
        let deps = nodes[id]["deps"].as_array().expect("deps is an array");
        for dep in deps {
            let pkg = dep["pkg"].as_str().expect("dep pkg");
            if !is_normal(dep) || reached.contains_key(pkg) {
                continue;
            }
            let mut p = path.clone();
            p.push(names[pkg].to_owned());
            reached.insert(pkg.to_owned(), p);
            queue.push_back(pkg);
        }
    }
    reached
}

/// The names of the packages among `reached` with a normal dependency on a package named
/// `target`.
fn normal_dependents(
    meta: &Value,
    reached: &HashMap<String, Vec<String>>,
    target: &str,
) -> Vec<String> {
    let names = package_names(meta);
    let mut out: Vec<String> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes is an array")
        .iter()
        .filter(|n| reached.contains_key(n["id"].as_str().expect("node id")))
        .filter(|n| {
            n["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .any(|d| names[d["pkg"].as_str().expect("dep pkg")] == target && is_normal(d))
        })
        .map(|n| names[n["id"].as_str().expect("node id")].to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_eventfold_binary_links_broker_clients_only_through_their_adapters_and_no_benchmark_crate() {
    let meta = metadata();
    let reached = normal_closure(&meta, "eventfold-cli");
    let reaches = |name: &str| {
        reached
            .values()
            .any(|p| p.last().map(String::as_str) == Some(name))
    };
    // The walk itself works: the CLI reaches its server, tokio, the PostgreSQL store's driver
    // and the broker adapters with their clients, which it is allowed to link.
    for expected in [
        "eventfold-server",
        "tokio",
        "eventfold-store-postgres",
        "tokio-postgres",
        "deadpool-postgres",
        "eventfold-transports",
    ] {
        assert!(
            reaches(expected),
            "the walk from eventfold-cli did not reach {expected}: the test is not walking the graph"
        );
    }
    let mut offending: Vec<String> = reached
        .values()
        .filter(|p| p.last().is_some_and(|n| FORBIDDEN.contains(&n.as_str())))
        .map(|p| p.join(" -> "))
        .collect();
    offending.sort();
    assert!(
        offending.is_empty(),
        "the eventfold binary's normal dependencies reach crates it must not link (move them to \
         eventfold-bench or to dev-dependencies):\n  {}",
        offending.join("\n  ")
    );
    for (client, adapter) in BROKER_CLIENTS {
        assert!(
            reaches(adapter) && reaches(client),
            "the walk did not reach {adapter} and {client}: eventfold relay publishes through it"
        );
        let dependents = normal_dependents(&meta, &reached, client);
        assert_eq!(
            dependents,
            vec![(*adapter).to_owned()],
            "{client} must reach the eventfold binary only through {adapter}, the crate that \
             owns that broker's protocol; use the adapter (through eventfold-transports) instead"
        );
    }
}
