//! hupwatch's `--log-format json` lines, read as a log shipper reads them: one JSON object a
//! line, its fields flattened (`message`, `level`, then the event's own fields).

use serde_json::Value;

/// Every line of `lines` that is a JSON object; other lines (Gunicorn's own output passed
/// through, a traceback's continuation) are not log events.
pub fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The events of a finished command's output (its stderr, where hupwatch logs).
pub fn events_in(output: &str) -> Vec<Value> {
    let lines: Vec<String> = output.lines().map(str::to_string).collect();
    events(&lines)
}

/// The first event whose message contains `needle`.
pub fn first_with<'a>(events: &'a [Value], needle: &str) -> Option<&'a Value> {
    events.iter().find(|e| message(e).contains(needle))
}

/// The events whose `field` is the JSON `true`.
pub fn flagged<'a>(events: &'a [Value], field: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e[field] == true).collect()
}

/// The event's `message`, or "".
pub fn message(event: &Value) -> &str {
    event["message"].as_str().unwrap_or("")
}
