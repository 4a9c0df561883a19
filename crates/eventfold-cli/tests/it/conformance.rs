//! The conformance suite through the HTTP client against a real `eventfold serve` process.

use eventfold_client::Client;

use crate::server::Server;

eventfold_conformance::conformance_tests!(|| async {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--durability", "none"]);
    let client = Client::new(&server.url, None).expect("client");
    (client, (server, dir))
});

/// The schema registry's cases through the client against `eventfold serve`, which validates
/// appends by default.
mod schemas {
    use eventfold_client::Client;

    use crate::server::Server;

    eventfold_conformance::schema_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path(), &["--durability", "none"]);
        let client = Client::new(&server.url, None).expect("client");
        (client, (server, dir))
    });
}

mod window {
    use eventfold_client::Client;

    use crate::server::Server;

    eventfold_conformance::idempotency_window_tests!(
        |window: eventfold_core::IdempotencyWindow| async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let events = window.events.to_string();
            let age = window
                .max_age
                .map_or_else(|| "none".to_owned(), |a| format!("{}ms", a.as_millis()));
            let server = Server::start(
                dir.path(),
                &[
                    "--durability",
                    "none",
                    "--idempotency-window-events",
                    &events,
                    "--idempotency-window",
                    &age,
                ],
            );
            let client = Client::new(&server.url, None).expect("client");
            (client, (server, dir))
        }
    );
}
