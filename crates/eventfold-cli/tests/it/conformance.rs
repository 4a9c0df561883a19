//! The conformance suite through the HTTP client against a real `eventfold serve` process.

use eventfold_client::Client;

use crate::server::Server;

eventfold_conformance::conformance_tests!(|| async {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--durability", "none"]);
    let client = Client::new(&server.url, None).expect("client");
    (client, (server, dir))
});
