//! Counting requests in the bed's audit logs (`TestBedBuilder::audit_log`): the store's file
//! audit device and the apiserver's log, one JSON object per line in both.

use std::collections::BTreeMap;
use std::path::Path;

/// Requests in an audit log from line `from` on, tallied under the name `classify` gives each
/// entry (`None`: not counted), and the number of complete lines read so far, where the next
/// tally starts. A last line still being written is left for the next tally.
pub fn tally(
    log: &Path,
    from: usize,
    classify: impl Fn(&serde_json::Value) -> Option<String>,
) -> crate::Result<(BTreeMap<String, u64>, usize)> {
    let text = std::fs::read_to_string(log)?;
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    let mut counts = BTreeMap::new();
    let mut lines = 0;
    for line in complete.lines() {
        lines += 1;
        if lines <= from {
            continue;
        }
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if let Some(name) = classify(&entry) {
            *counts.entry(name).or_default() += 1;
        }
    }
    Ok((counts, lines))
}

/// For the store's log: each request (not its response), named by `name_path`.
pub fn store_request(
    name_path: impl Fn(&str) -> String,
) -> impl Fn(&serde_json::Value) -> Option<String> {
    move |entry| {
        (entry["type"] == "request")
            .then(|| name_path(entry["request"]["path"].as_str().unwrap_or_default()))
    }
}

/// For the apiserver's log: each request of a client whose User-Agent starts with `agent`,
/// named `<verb> <resource>`. A watch is logged when it starts and again when it ends; it counts
/// once, at its start.
pub fn api_request(agent: &str) -> impl Fn(&serde_json::Value) -> Option<String> + '_ {
    move |event| {
        let ours = event["userAgent"]
            .as_str()
            .is_some_and(|a| a.starts_with(agent));
        let verb = event["verb"].as_str().unwrap_or_default();
        let once = match event["stage"].as_str() {
            Some("ResponseStarted") => true,
            Some("ResponseComplete") => verb != "watch",
            _ => false,
        };
        (ours && once).then(|| {
            let resource = event["objectRef"]["resource"].as_str().unwrap_or("(none)");
            format!("{verb} {resource}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_of_the_agent_counts_once_and_a_partial_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let event = |agent: &str, verb: &str, stage: &str| {
            serde_json::json!({"userAgent": agent, "verb": verb, "stage": stage,
                "objectRef": {"resource": "secretsstoreimports"}})
            .to_string()
        };
        let lines = [
            event("ssi-csi/0.1.0", "get", "ResponseComplete"),
            event("kubectl/v1.37.2", "get", "ResponseComplete"),
            event("ssi-csi/0.1.0", "watch", "ResponseStarted"),
            event("ssi-csi/0.1.0", "watch", "ResponseComplete"),
            event("ssi-csi/0.1.0", "get", "Panic"),
        ];
        std::fs::write(
            &log,
            format!("{}\n{{\"userAgent\": \"ssi", lines.join("\n")),
        )
        .unwrap();
        let (counts, read) = tally(&log, 0, api_request("ssi-csi/")).unwrap();
        assert_eq!(read, 5, "the partial line is not read");
        assert_eq!(counts.get("get secretsstoreimports"), Some(&1));
        assert_eq!(counts.get("watch secretsstoreimports"), Some(&1));
        assert_eq!(counts.len(), 2);
        let (later, _) = tally(&log, 1, api_request("ssi-csi/")).unwrap();
        assert_eq!(later.get("get secretsstoreimports"), None, "from line 2 on");
    }
}
