//! `GET /backup`: the server's online backup archive, as a stream of bytes.

use bytes::Bytes;
use eventfold_core::StoreResult;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use crate::Client;

impl Client {
    /// Starts an online backup of the server's stores (`GET /backup`, needs `admin` on every
    /// stream) and answers the archive's bytes as they come (a tar, see
    /// `eventfold_protocol::backup`). The stream ends in an error, never early, when the server
    /// could not finish the archive.
    pub async fn backup(&self) -> StoreResult<BoxStream<'static, StoreResult<Bytes>>> {
        let what = "take a backup";
        let resp = self
            .send(self.req(reqwest::Method::GET, self.url(&["backup"])), what)
            .await?;
        Ok(resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| crate::transport(what, e)))
            .boxed())
    }
}

impl Client {
    /// Starts a scavenge of the server's event store in the background (`POST /scavenge`,
    /// needs `admin` on every stream); answers its status. `scavenge_running` when one runs.
    pub async fn start_scavenge(
        &self,
    ) -> StoreResult<eventfold_protocol::scavenge::ScavengeStatus> {
        self.json(
            self.req(reqwest::Method::POST, self.url(&["scavenge"])),
            "start a scavenge",
        )
        .await
    }

    /// How the last (or running) scavenge stands (`GET /scavenge`).
    pub async fn scavenge_status(
        &self,
    ) -> StoreResult<eventfold_protocol::scavenge::ScavengeStatus> {
        self.json(
            self.req(reqwest::Method::GET, self.url(&["scavenge"])),
            "read the scavenge's status",
        )
        .await
    }
}
