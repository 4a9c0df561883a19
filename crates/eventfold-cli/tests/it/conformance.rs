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
