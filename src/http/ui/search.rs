//! The mails pages' filter as it travels in a URL (so a filtered page can be bookmarked) and
//! the search box's qualifiers: `to:`, `kind:`, `sub:`, `reseller:`, `state:`, `before:`,
//! `after:`; a bare word looks for a recipient.

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::{MailFilter, OutboxState};

/// Query-string fields, in the order links carry them.
pub const FIELDS: [&str; 7] = ["state", "kind", "sub", "reseller", "to", "after", "before"];

/// A form or query string as its pairs, repeated names kept.
pub fn pairs(raw: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// The filter a page's query string asks for: its fields, then the search box `q` on top.
/// A value that does not parse is an error naming its field and value.
pub fn filter(pairs: &[(String, String)]) -> Result<MailFilter, String> {
    let mut f = MailFilter::default();
    for name in FIELDS {
        if let Some(v) = first(pairs, name) {
            set(&mut f, name, v)?;
        }
    }
    if let Some(q) = first(pairs, "q") {
        for word in q.split_whitespace() {
            match word.split_once(':') {
                Some((k, v)) if !v.is_empty() => {
                    let name = match k {
                        "to" | "kind" | "sub" | "reseller" | "state" | "before" | "after" => k,
                        other => return Err(format!("search: unknown qualifier {other:?}:")),
                    };
                    set(&mut f, name, v)?;
                }
                _ => set(&mut f, "to", word)?,
            }
        }
    }
    Ok(f)
}

fn set(f: &mut MailFilter, name: &str, v: &str) -> Result<(), String> {
    match name {
        "state" => {
            f.state = Some(v.parse::<OutboxState>().map_err(|_| {
                format!("state: {v:?} is not one of pending, sending, sent, failed, skipped")
            })?)
        }
        "kind" => f.kind = Some(v.to_owned()),
        "sub" => f.subscription = Some(v.to_owned()),
        "reseller" => f.reseller = Some(v.to_owned()),
        "to" => f.recipient = Some(v.to_owned()),
        "after" => f.after = Some(instant(name, v)?),
        "before" => f.before = Some(instant(name, v)?),
        _ => {}
    }
    Ok(())
}

/// A date (midnight UTC) or an RFC 3339 instant.
fn instant(name: &str, v: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.to_utc())
        .map_err(|_| format!("{name}: {v:?} is not a date (YYYY-MM-DD) or an RFC 3339 instant"))
}

/// The filter as query-string pairs (what [`filter`] reads back).
pub fn to_pairs(f: &MailFilter) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(s) = f.state {
        out.push(("state", s.as_str().to_owned()));
    }
    let text = [
        ("kind", &f.kind),
        ("sub", &f.subscription),
        ("reseller", &f.reseller),
        ("to", &f.recipient),
    ];
    for (k, v) in text {
        if let Some(v) = v {
            out.push((k, v.clone()));
        }
    }
    if let Some(t) = f.after {
        out.push(("after", t.to_rfc3339()));
    }
    if let Some(t) = f.before {
        out.push(("before", t.to_rfc3339()));
    }
    out
}

/// `pairs` as a query string.
pub fn query(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_box_and_the_fields_make_one_filter_that_round_trips() {
        let p = pairs("kind=ready&q=to%3Aann%40x.com+state%3Afailed+after%3A2026-12-01+bob");
        let f = filter(&p).unwrap();
        assert_eq!(f.kind.as_deref(), Some("ready"));
        assert_eq!(f.state, Some(OutboxState::Failed));
        // The bare word comes last and wins over `to:`.
        assert_eq!(f.recipient.as_deref(), Some("bob"));
        assert_eq!(f.after.unwrap().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let back = filter(&pairs(&query(&to_pairs(&f)))).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn a_bad_value_names_its_field_and_value() {
        let e = filter(&pairs("q=state%3Adone")).unwrap_err();
        assert!(e.contains("state") && e.contains("\"done\""), "{e}");
        let e = filter(&pairs("before=tomorrow")).unwrap_err();
        assert!(e.starts_with("before:") && e.contains("tomorrow"), "{e}");
        let e = filter(&pairs("q=color%3Ared")).unwrap_err();
        assert!(e.contains("color"), "{e}");
    }
}
