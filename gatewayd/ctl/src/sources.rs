//! `gatewayctl source status|command`, and finding a source by kind for the
//! adapter-specific subcommands (`lora …`, `serial …`).

use anyhow::Context as _;
use serde_json::Value as Json;

use crate::client::Client;
use crate::convert::dict_to_json;
use crate::error::{CtlError, Exit};
use crate::Stdout;

/// `source status NAME`: the JSON the source publishes, pretty-printed
/// (the same with and without --json).
pub async fn source_status(client: &Client, name: &str, out: &mut Stdout) -> anyhow::Result<Exit> {
    let status = status_of(client, name).await?;
    out.json_pretty(&status)?;
    Ok(Exit::Ok)
}

/// `source command NAME REQUEST`: sends a JSON request, prints the answer.
pub async fn source_command(
    client: &Client,
    name: &str,
    request: &Json,
    out: &mut Stdout,
) -> anyhow::Result<Exit> {
    let answer = command(client, name, request).await?;
    out.json_pretty(&answer)?;
    Ok(Exit::Ok)
}

/// Parses `source command`'s REQUEST before connecting.
pub fn parse_request(text: &str) -> Result<Json, CtlError> {
    let v: Json = serde_json::from_str(text)
        .map_err(|e| CtlError::Input(format!("REQUEST is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(CtlError::Input(
            "REQUEST must be a JSON object, e.g. '{\"command\": \"list\"}'".into(),
        ));
    }
    Ok(v)
}

/// Sends `request` to source `name` and parses its JSON answer.
pub async fn command(client: &Client, name: &str, request: &Json) -> anyhow::Result<Json> {
    let text = client
        .source_command(name, &request.to_string())
        .await
        .with_context(|| format!("source {name}"))?;
    serde_json::from_str(&text).with_context(|| format!("source {name}: answer is not JSON"))
}

/// The status a source publishes, parsed.
pub async fn status_of(client: &Client, name: &str) -> anyhow::Result<Json> {
    let text = client
        .source_status(name)
        .await
        .with_context(|| format!("reading the status of source {name}"))?;
    serde_json::from_str(&text).with_context(|| format!("source {name}: status is not JSON"))
}

/// The source to address: `wanted` (`--source`), else the only running
/// source of `kind`.
pub async fn source_of_kind(
    client: &Client,
    kind: &str,
    wanted: Option<String>,
) -> anyhow::Result<String> {
    if let Some(name) = wanted {
        return Ok(name);
    }
    let props = client
        .properties()
        .await
        .context("reading gatewayd's adapters")?;
    let props = dict_to_json(&props);
    let names: Vec<String> = props
        .get("Adapters")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let a = a.as_array()?;
            (a.get(1)?.as_str()? == kind).then(|| a.first()?.as_str().map(str::to_owned))?
        })
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CtlError::NotFound(format!("no {kind} source is running")).into()),
        many => Err(CtlError::Input(format!(
            "several {kind} sources run ({}): choose one with --source",
            many.join(", ")
        ))
        .into()),
    }
}
