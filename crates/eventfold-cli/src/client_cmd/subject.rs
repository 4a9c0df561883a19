//! `eventfold subject forget ID`: crypto-shredding of a data subject.

use super::{CliError, ConnArgs, Out};

/// Data subjects: events appended with `"$subject": "ID"` in their metadata are stored
/// encrypted with that subject's own key.
#[derive(Debug, clap::Subcommand)]
pub enum SubjectCommand {
    /// Delete a data subject's key (needs `admin`): every event appended with its `$subject`
    /// reads from then on with its data redacted (empty, and `"$redacted":
    /// "subject-key-deleted"` in its metadata), for good. Later events of the subject get a
    /// new key.
    Forget(ForgetArgs),
}

/// `eventfold subject forget ID`.
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The subject's id, as events name it in `$subject`.
    subject: String,
}

pub(super) async fn run(command: SubjectCommand) -> Result<(), CliError> {
    let SubjectCommand::Forget(a) = command;
    let subject =
        eventfold_shred::Subject::new(&a.subject).map_err(|e| CliError::usage(e.to_string()))?;
    let conn = a.conn.connect()?;
    conn.client
        .forget_subject(subject.as_str())
        .await
        .map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    if conn.json {
        out.json(&serde_json::json!({"subject": subject.as_str(), "key": "deleted"}))?;
    } else {
        out.line(format_args!(
            "deleted the key of data subject {subject:?}: its events read with their data redacted from now on"
        ))?;
    }
    out.flush()
}
