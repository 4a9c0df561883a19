//! Which message broker an example's handlers run on, as its command line says:
//! `--transport URL`, any URL [`eventfold_transports::TransportUrl`] takes
//! (`memory|redis://…|amqp://…|kafka://host:port[,host:port]|nats://…`). Either way the domain
//! code is handed an `Arc<dyn Transport>` and does not know which.

use anyhow::{Context as _, bail};
use eventfold_transports::{TransportUrl, URL_FORMS};

/// Takes `--transport URL` out of `args` (at most once): the other arguments, in order, and
/// the broker's URL, parsed, if one was given. Open it with [`TransportUrl::connect`].
pub fn split(
    args: impl IntoIterator<Item = String>,
) -> anyhow::Result<(Vec<String>, Option<TransportUrl>)> {
    let mut rest = Vec::new();
    let mut transport = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--transport" {
            let value = args
                .next()
                .with_context(|| format!("--transport needs a value: {URL_FORMS}"))?;
            let url = value
                .parse::<TransportUrl>()
                .context("--transport is not a broker URL")?;
            if transport.replace(url).is_some() {
                bail!("--transport is given twice; give it once");
            }
        } else {
            rest.push(arg);
        }
    }
    Ok((rest, transport))
}
