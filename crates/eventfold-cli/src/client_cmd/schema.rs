//! `eventfold schema put|get|list`: the JSON Schemas a server validates appends against.

use std::path::PathBuf;

use eventfold_core::{
    EventSchema, EventStore as _, EventType, SchemaDocument, SchemaKey, SchemaRegistered,
};

use super::{CliError, ConnArgs, Out};

/// JSON Schemas per event type and schema version: once one is registered, the server refuses
/// appends of events of that type and version whose data does not match it.
#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Register the JSON Schema in FILE (`-` for stdin) for events of TYPE with schema version
    /// VERSION (needs `admin`). A registered schema never changes: registering the same
    /// document again does nothing, another one is refused (register it as a new version).
    Put(PutArgs),
    /// Print the JSON Schema registered for TYPE and VERSION.
    Get(GetArgs),
    /// List the event types and schema versions with a registered JSON Schema.
    List(ListArgs),
}

/// `eventfold schema put TYPE VERSION FILE`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The event type.
    event_type: EventType,
    /// The schema version (the events' `schema_version`).
    version: u32,
    /// The file holding the JSON Schema, or `-` for stdin.
    file: PathBuf,
}

/// `eventfold schema get TYPE VERSION`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The event type.
    event_type: EventType,
    /// The schema version.
    version: u32,
}

/// `eventfold schema list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

pub(super) async fn run(command: SchemaCommand) -> Result<(), CliError> {
    match command {
        SchemaCommand::Put(a) => put(a).await,
        SchemaCommand::Get(a) => get(a).await,
        SchemaCommand::List(a) => list(a).await,
    }
}

async fn put(a: PutArgs) -> Result<(), CliError> {
    let text = if a.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::usage(format!("cannot read the schema from stdin: {e}")))?;
        buf
    } else {
        std::fs::read(&a.file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", a.file.display())))?
    };
    let document = SchemaDocument::from_json(&text)
        .map_err(|e| CliError::usage(format!("{}: {e}", a.file.display())))?;
    let key = SchemaKey::new(a.event_type, a.version);
    let conn = a.conn.connect()?;
    let done = conn
        .client
        .register_schema(EventSchema {
            key: key.clone(),
            document,
        })
        .await
        .map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    let created = done == SchemaRegistered::Created;
    if conn.json {
        out.json(&serde_json::json!({
            "event_type": key.event_type.as_str(),
            "schema_version": key.schema_version,
            "created": created,
        }))?;
    } else if created {
        out.line(format_args!(
            "registered the JSON Schema of {key}: appends of such events are checked against it from now on"
        ))?;
    } else {
        out.line(format_args!(
            "the same JSON Schema was registered for {key} already: nothing changed"
        ))?;
    }
    out.flush()
}

async fn get(a: GetArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let key = SchemaKey::new(a.event_type, a.version);
    let schema = conn.client.schema(&key).await.map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    if conn.json {
        out.json(schema.document.value())?;
    } else {
        let pretty = serde_json::to_string_pretty(schema.document.value())
            .map_err(|e| CliError::usage(format!("cannot print the schema: {e}")))?;
        out.line(pretty)?;
    }
    out.flush()
}

async fn list(a: ListArgs) -> Result<(), CliError> {
    let conn = a.conn.connect()?;
    let keys = conn.client.list_schemas().await.map_err(|e| conn.fail(e))?;
    let mut out = Out::new();
    if conn.json {
        let schemas: Vec<_> = keys
            .iter()
            .map(eventfold_protocol::schemas::SchemaKeyBody::from)
            .collect();
        out.json(&serde_json::json!({ "schemas": schemas }))?;
    } else if keys.is_empty() {
        out.line("no JSON Schema is registered")?;
    } else {
        for k in &keys {
            out.line(format_args!("{}  {}", k.event_type, k.schema_version))?;
        }
    }
    out.flush()
}
