//! `DELETE /subjects/{subject}/key`: crypto-shredding.

use eventfold_core::StoreResult;

use crate::Client;

impl Client {
    /// Deletes a data subject's key (`DELETE /subjects/{subject}/key`, needs `admin` on every
    /// stream): from then on the server returns every event appended with that `$subject` with
    /// its data redacted. `Ok` also when the key was deleted before; an error with the code
    /// `subject_key_not_found` when no event ever named the subject.
    pub async fn forget_subject(&self, subject: &str) -> StoreResult<()> {
        let rb = self.req(
            reqwest::Method::DELETE,
            self.url(&["subjects", subject, "key"]),
        );
        self.send(rb, &format!("delete the key of data subject {subject:?}"))
            .await
            .map(|_| ())
    }
}
