//! Rows of resellers, customers and subscriptions as the marketplace sends them: read from
//! its JSON (or CSV, for subscriptions alone) and checked, field by field, against what the
//! database already holds. One bad row rejects the lot, and the error lists every problem by
//! section, row and field. Looking up what rows refer to and writing them is
//! [`crate::service::records`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::domain::{
    AssignedLicenses, Billing, Csn, CustomerId, EmailAddress, ProductId, ResellerId, Seats,
    SubscriptionId, TimeZoneName, forbidden_char,
};
use crate::domain::{Customer, Reseller, Subscription};

/// One problem in one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub section: &'static str,
    /// 1-based row number within its section (for CSV: the data line, header excluded).
    pub row: usize,
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} row {}", self.section, self.row)?;
        if let Some(id) = &self.id {
            write!(f, " (id {id})")?;
        }
        write!(f, ", field `{}`: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} is not valid {format}: {reason}")]
    Syntax {
        path: String,
        format: &'static str,
        reason: String,
    },
    #[error("{}; nothing was written:\n{}", count(.0.len()), .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Issue>),
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem found".into()
    } else {
        format!("{n} problems found")
    }
}

/// Parsed rows, not yet checked.
#[derive(Debug, Default)]
pub struct RawFile {
    pub resellers: Vec<Map<String, Value>>,
    pub customers: Vec<Map<String, Value>>,
    pub subscriptions: Vec<Map<String, Value>>,
}

impl RawFile {
    pub fn rows(&self) -> usize {
        self.resellers.len() + self.customers.len() + self.subscriptions.len()
    }
}

/// Reads a `.json` file (all three sections) or a `.csv` file (subscriptions, one per line,
/// with a header naming the fields).
pub fn read_file(path: &Path) -> Result<RawFile, ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImportError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (format, parsed) = if is_csv {
        ("CSV", parse_csv(&bytes))
    } else {
        ("JSON", parse_json(&bytes))
    };
    let syntax = |reason| ImportError::Syntax {
        path: shown.clone(),
        format,
        reason,
    };
    let raw = parsed.map_err(syntax)?;
    // A file with nothing in it is a mistake (a truncated export, the wrong file), not a
    // successful import of nothing.
    if raw.rows() == 0 {
        return Err(syntax(if is_csv {
            "it holds no subscription: a header line and at least one row are needed".into()
        } else {
            "it holds no resellers, customers or subscriptions".into()
        }));
    }
    Ok(raw)
}

pub fn parse_json(bytes: &[u8]) -> Result<RawFile, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Value::Object(mut top) = doc else {
        return Err("expected an object with `resellers`, `customers`, `subscriptions`".into());
    };
    let mut take = |name: &str| -> Result<Vec<Map<String, Value>>, String> {
        match top.remove(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(m),
                    other => Err(format!(
                        "{name}[{i}] must be an object, found {}",
                        kind_of(&other)
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "`{name}` must be an array, found {}",
                kind_of(&other)
            )),
        }
    };
    let file = RawFile {
        resellers: take("resellers")?,
        customers: take("customers")?,
        subscriptions: take("subscriptions")?,
    };
    if let Some(extra) = top.keys().next() {
        return Err(format!(
            "unknown section `{extra}`: expected resellers, customers, subscriptions"
        ));
    }
    Ok(file)
}

pub fn parse_csv(bytes: &[u8]) -> Result<RawFile, String> {
    // Cells are not trimmed here: a control character in one is refused by the checks, and a
    // trim would strip it unseen. The checks trim spaces themselves.
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .from_reader(bytes);
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let mut subscriptions = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let mut row = Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            // Empty CSV cells mean "not given", like a missing JSON key.
            if !v.is_empty() {
                row.insert(h.to_owned(), Value::String(v.to_owned()));
            }
        }
        subscriptions.push(row);
    }
    Ok(RawFile {
        subscriptions,
        ..RawFile::default()
    })
}

/// Text as it may be shown in a message: escaped when it holds a control character.
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if forbidden_char(s).is_some() {
        s.escape_debug().to_string().into()
    } else {
        s.into()
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Records that passed every check.
#[derive(Debug, Default)]
pub struct Checked {
    pub resellers: Vec<Reseller>,
    pub customers: Vec<Customer>,
    pub subscriptions: Vec<Subscription>,
}

/// What the database already holds that rows may refer to.
#[derive(Debug, Default)]
pub struct Known {
    pub resellers: HashSet<String>,
    /// Subscriptions whose auto-renew was disabled by an accepted request: final.
    pub disabled: HashSet<String>,
    /// customer id → its reseller id
    pub customers: HashMap<String, String>,
}

/// Field-by-field reader for one row, collecting every problem instead of stopping at the
/// first.
struct RowReader<'a> {
    section: &'static str,
    row: usize,
    id: Option<String>,
    map: &'a Map<String, Value>,
    issues: &'a mut Vec<Issue>,
    /// Fields refused for a control character: already listed, read as absent.
    refused: HashSet<String>,
}

impl<'a> RowReader<'a> {
    fn new(
        section: &'static str,
        row: usize,
        map: &'a Map<String, Value>,
        allowed: &[&str],
        issues: &'a mut Vec<Issue>,
    ) -> Self {
        // Shown escaped: an id with a line break must not break the error's line.
        let id = map
            .get("id")
            .and_then(|v| v.as_str())
            .map(|s| shown(s).into_owned());
        let mut reader = Self {
            section,
            row,
            id,
            map,
            issues,
            refused: HashSet::new(),
        };
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            reader.issue(
                &shown(key),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            );
        }
        // Every field, whatever it holds: a control character is refused, never stripped.
        for field in allowed {
            if let Some(Value::String(s)) = map.get(*field)
                && let Some(c) = forbidden_char(s)
            {
                reader.issue(
                    field,
                    format!(
                        "{s:?} holds the control character U+{:04X}, which is not allowed",
                        u32::from(c)
                    ),
                );
                reader.refused.insert((*field).to_owned());
            }
        }
        reader
    }

    fn issue(&mut self, field: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            section: self.section,
            row: self.row,
            id: self.id.clone(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// A text value; numbers are accepted as their text (CSV and hand-written JSON mix them).
    fn text(&mut self, field: &str, required: bool) -> Option<String> {
        if self.refused.contains(field) {
            return None;
        }
        match self.map.get(field) {
            None | Some(Value::Null) => {
                if required {
                    self.issue(field, "missing");
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                if required {
                    self.issue(field, "empty");
                }
                None
            }
            Some(Value::String(s)) => Some(s.trim().to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.issue(field, format!("expected text, found {}", kind_of(other)));
                None
            }
        }
    }

    fn parsed<T, E: fmt::Display>(
        &mut self,
        field: &str,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let raw = self.text(field, required)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.issue(field, e.to_string());
                None
            }
        }
    }

    fn name(&mut self, field: &str) -> Option<String> {
        self.checked_name(field, true)
    }

    fn checked_name(&mut self, field: &str, required: bool) -> Option<String> {
        let s = self.text(field, required)?;
        if s.chars().count() > 200 {
            self.issue(
                field,
                format!("{} characters is too long (at most 200)", s.chars().count()),
            );
            return None;
        }
        Some(s)
    }

    fn integer(&mut self, field: &str) -> Option<i64> {
        if self.refused.contains(field) {
            return None;
        }
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.issue(field, "missing");
                None
            }
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Some(i),
                None => {
                    self.issue(field, format!("{n} is not a whole number"));
                    None
                }
            },
            Some(Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(i) => Some(i),
                Err(_) => {
                    self.issue(field, format!("{s:?} is not a whole number"));
                    None
                }
            },
            Some(other) => {
                self.issue(
                    field,
                    format!("expected a whole number, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        if self.refused.contains(field) {
            return None;
        }
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.issue(field, "missing");
                None
            }
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => {
                    self.issue(field, format!("{s:?} is not true or false"));
                    None
                }
            },
            Some(other) => {
                self.issue(
                    field,
                    format!("expected true or false, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn date(&mut self, field: &str) -> Option<NaiveDate> {
        self.parsed(field, true, |s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("{s:?} is not a date (expected YYYY-MM-DD, a real day)"))
        })
    }
}

const RESELLER_FIELDS: &[&str] = &[
    "id",
    "name",
    "email",
    "csn",
    "timezone",
    "calendar",
    "contact_name",
];
const CUSTOMER_FIELDS: &[&str] = &["id", "reseller_id", "name", "email"];
const SUBSCRIPTION_FIELDS: &[&str] = &[
    "id",
    "reseller_id",
    "customer_id",
    "product_id",
    "plan",
    "billing",
    "seats",
    "assigned_licenses",
    "term_start",
    "term_end",
    "auto_renew",
    "notify_email",
    "provisioning",
];

/// Checks every row. `known_calendar` says whether a calendar name exists; `known` is what the
/// database already holds that rows may refer to.
pub fn check(
    raw: &RawFile,
    known: &Known,
    known_calendar: &dyn Fn(&str) -> Result<(), String>,
    mut progress: impl FnMut(usize),
) -> Result<Checked, ImportError> {
    let mut issues = Vec::new();
    let mut out = Checked::default();

    let mut seen = HashSet::new();
    for (i, map) in raw.resellers.iter().enumerate() {
        let mut r = RowReader::new("resellers", i + 1, map, RESELLER_FIELDS, &mut issues);
        let id = r.parsed("id", true, ResellerId::parse);
        let name = r.name("name");
        let email = r.parsed("email", true, EmailAddress::parse);
        let csn = r.parsed("csn", false, Csn::parse);
        let csn_given = r.text("csn", false).is_some();
        let timezone = r.parsed("timezone", true, TimeZoneName::parse);
        let calendar = r.parsed("calendar", false, |c| {
            known_calendar(c).map(|()| c.to_owned())
        });
        let calendar_given = r.text("calendar", false).is_some();
        let contact_name = r.checked_name("contact_name", false);
        let contact_given = r.text("contact_name", false).is_some();
        if let Some(id) = &id
            && !seen.insert(id.as_str().to_owned())
        {
            r.issue(
                "id",
                format!("{:?} appears more than once in this file", id.as_str()),
            );
        }
        if let (Some(id), Some(name), Some(email), Some(timezone)) = (id, name, email, timezone)
            && (csn.is_some() || !csn_given)
            && (calendar.is_some() || !calendar_given)
            && (contact_name.is_some() || !contact_given)
        {
            out.resellers.push(Reseller {
                id,
                name,
                email,
                csn,
                timezone,
                calendar,
                contact_name,
            });
        }
        progress(1);
    }

    // References count rows of this file even when those rows are invalid themselves: their
    // own errors are listed, and "no reseller R1" on top would only mislead.
    let raw_text = |m: &Map<String, Value>, f: &str| {
        m.get(f)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned())
    };
    let resellers_in_file: HashSet<String> = raw
        .resellers
        .iter()
        .filter_map(|m| raw_text(m, "id"))
        .collect();
    let reseller_exists = |id: &str| resellers_in_file.contains(id) || known.resellers.contains(id);

    let mut seen = HashSet::new();
    let mut customer_owner: HashMap<String, String> = known.customers.clone();
    for m in &raw.customers {
        if let (Some(id), Some(owner)) = (raw_text(m, "id"), raw_text(m, "reseller_id")) {
            customer_owner.insert(id, owner);
        }
    }
    for (i, map) in raw.customers.iter().enumerate() {
        let mut r = RowReader::new("customers", i + 1, map, CUSTOMER_FIELDS, &mut issues);
        let id = r.parsed("id", true, CustomerId::parse);
        let reseller_id = r.parsed("reseller_id", true, ResellerId::parse);
        let name = r.name("name");
        let email = r.parsed("email", true, EmailAddress::parse);
        if let Some(rid) = &reseller_id
            && !reseller_exists(rid.as_str())
        {
            r.issue(
                "reseller_id",
                format!(
                    "no reseller {:?} in this file or the database",
                    rid.as_str()
                ),
            );
        }
        if let Some(id) = &id
            && !seen.insert(id.as_str().to_owned())
        {
            r.issue(
                "id",
                format!("{:?} appears more than once in this file", id.as_str()),
            );
        }
        if let (Some(id), Some(reseller_id), Some(name), Some(email)) =
            (id, reseller_id, name, email)
            && reseller_exists(reseller_id.as_str())
        {
            out.customers.push(Customer {
                id,
                reseller_id,
                name,
                email,
            });
        }
        progress(1);
    }

    let mut seen = HashSet::new();
    for (i, map) in raw.subscriptions.iter().enumerate() {
        let before = issues.len();
        let mut r = RowReader::new(
            "subscriptions",
            i + 1,
            map,
            SUBSCRIPTION_FIELDS,
            &mut issues,
        );
        let id = r.parsed("id", true, SubscriptionId::parse);
        let reseller_id = r.parsed("reseller_id", true, ResellerId::parse);
        let customer_id = r.parsed("customer_id", true, CustomerId::parse);
        let product_id = r.parsed("product_id", true, ProductId::parse);
        let plan = r.name("plan");
        let billing = r.parsed("billing", true, |s| s.parse::<Billing>());
        let seats = r.integer("seats").and_then(|n| {
            match u16::try_from(n).ok().and_then(|n| Seats::new(n).ok()) {
                Some(s) => Some(s),
                None => {
                    r.issue("seats", format!("seats must be between 1 and 999, got {n}"));
                    None
                }
            }
        });
        let assigned = r.integer("assigned_licenses");
        let assigned = match (assigned, seats) {
            (Some(n), Some(seats)) => match AssignedLicenses::parse_for(n, seats) {
                Ok(a) => Some(a),
                Err(e) => {
                    r.issue("assigned_licenses", e.to_string());
                    None
                }
            },
            _ => None,
        };
        let term_start = r.date("term_start");
        let term_end = r.date("term_end");
        if let (Some(start), Some(end)) = (term_start, term_end) {
            if end <= start {
                r.issue("term_end", format!("{end} is not after term_start {start}"));
            } else if !crate::renewal::is_anniversary(start, end) {
                // Terms are 12 months: a term end is always an anniversary of the start.
                let k = crate::renewal::term_index_at(start, end);
                let near = crate::renewal::term_end(start, k)
                    .map(|d| format!(" (the nearest is {d})"))
                    .unwrap_or_default();
                r.issue(
                    "term_end",
                    format!("{end} is not an anniversary of term_start {start}{near}: terms are 12 months"),
                );
            }
        }
        let auto_renew = r.boolean("auto_renew");
        if let (Some(true), Some(id)) = (auto_renew, &id)
            && known.disabled.contains(id.as_str())
        {
            r.issue(
                "auto_renew",
                format!(
                    "true is refused: auto-renew of {:?} was disabled on request, and that cannot be revoked",
                    id.as_str()
                ),
            );
        }
        let notify_email = r.parsed("notify_email", false, EmailAddress::parse);
        // Only "pending" is something to say at creation: the notices that follow are events.
        let open_order = r
            .parsed("provisioning", false, |s| match s {
                "pending" => Ok(true),
                other => Err(format!(
                    "{other:?} is not a provisioning state a subscription can be created in: only \"pending\" (the order is in flight; its steps arrive as events)"
                )),
            })
            .unwrap_or(false);
        if let Some(rid) = &reseller_id
            && !reseller_exists(rid.as_str())
        {
            r.issue(
                "reseller_id",
                format!(
                    "no reseller {:?} in this file or the database",
                    rid.as_str()
                ),
            );
        }
        if let Some(cid) = &customer_id {
            match customer_owner.get(cid.as_str()) {
                None => r.issue(
                    "customer_id",
                    format!(
                        "no customer {:?} in this file or the database",
                        cid.as_str()
                    ),
                ),
                Some(owner) => {
                    if let Some(rid) = &reseller_id
                        && owner != rid.as_str()
                    {
                        r.issue(
                            "customer_id",
                            format!(
                                "customer {:?} belongs to reseller {owner:?}, not {:?}",
                                cid.as_str(),
                                rid.as_str()
                            ),
                        );
                    }
                }
            }
        }
        if let Some(id) = &id
            && !seen.insert(id.as_str().to_owned())
        {
            r.issue(
                "id",
                format!("{:?} appears more than once in this file", id.as_str()),
            );
        }
        let clean = issues.len() == before;
        if let (
            true,
            Some(id),
            Some(reseller_id),
            Some(customer_id),
            Some(product_id),
            Some(plan),
            Some(billing),
            Some(seats),
            Some(assigned_licenses),
            Some(term_start),
            Some(term_end),
            Some(auto_renew),
        ) = (
            clean,
            id,
            reseller_id,
            customer_id,
            product_id,
            plan,
            billing,
            seats,
            assigned,
            term_start,
            term_end,
            auto_renew,
        ) {
            out.subscriptions.push(Subscription {
                id,
                reseller_id,
                customer_id,
                product_id,
                plan,
                billing,
                seats,
                assigned_licenses,
                term_start,
                term_end,
                auto_renew,
                notify_email,
                renewal: Default::default(),
                open_order,
                provisioning: Default::default(),
            });
        }
        progress(1);
    }

    if issues.is_empty() {
        Ok(out)
    } else {
        Err(ImportError::Invalid(issues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_calendar(_: &str) -> Result<(), String> {
        Ok(())
    }

    const GOOD: &str = r#"{
      "resellers": [{"id": "R1", "name": "Acme IT", "email": "ops@acme.example",
                     "csn": "5101234567", "timezone": "America/New_York", "calendar": "us"}],
      "customers": [{"id": "C1", "reseller_id": "R1", "name": "Globex", "email": "it@globex.example"}],
      "subscriptions": [{"id": "S1", "reseller_id": "R1", "customer_id": "C1",
                     "product_id": "057O1-WW6525-L347", "plan": "AutoCAD LT", "billing": "annual_prepaid",
                     "seats": 10, "assigned_licenses": 3, "term_start": "2025-12-28",
                     "term_end": "2026-12-28", "auto_renew": true,
                     "notify_email": "buyer@acme.example"}]}"#;

    #[test]
    fn the_documented_example_is_accepted() {
        let raw = parse_json(GOOD.as_bytes()).unwrap();
        let checked = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap();
        assert_eq!(checked.subscriptions.len(), 1);
        let s = &checked.subscriptions[0];
        assert_eq!(s.product_id.as_str(), "057O1WW6525L347");
        assert_eq!(s.seats.get(), 10);
        assert_eq!(
            checked.resellers[0].csn.as_ref().unwrap().as_str(),
            "5101234567"
        );
    }

    #[test]
    fn a_contact_name_is_optional_and_checked_like_a_name() {
        let with = |contact: &str| {
            GOOD.replace(
                "\"csn\": \"5101234567\"",
                &format!("\"csn\": \"5101234567\", \"contact_name\": {contact}"),
            )
        };
        let checked = |json: &str| {
            let raw = parse_json(json.as_bytes()).unwrap();
            check(&raw, &Known::default(), &any_calendar, |_| {})
        };
        assert_eq!(checked(GOOD).unwrap().resellers[0].contact_name, None);
        assert_eq!(
            checked(&with("\" Dana Reyes \"")).unwrap().resellers[0]
                .contact_name
                .as_deref(),
            Some("Dana Reyes")
        );
        let err = checked(&with("\"Dana\\u0007\"")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("field `contact_name`"), "{text}");
    }

    #[test]
    fn every_problem_is_listed_by_row_and_field() {
        let bad = GOOD
            .replace("5101234567", "510123456")
            .replace("\"seats\": 10", "\"seats\": 0")
            .replace("2026-12-28", "2026-02-30")
            .replace("buyer@acme.example", "not-an-email");
        let raw = parse_json(bad.as_bytes()).unwrap();
        let err = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap_err();
        let ImportError::Invalid(issues) = &err else {
            panic!("{err}")
        };
        let fields: Vec<(&str, usize, &str)> = issues
            .iter()
            .map(|i| (i.section, i.row, i.field.as_str()))
            .collect();
        assert!(fields.contains(&("resellers", 1, "csn")), "{fields:?}");
        assert!(
            fields.contains(&("subscriptions", 1, "seats")),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("subscriptions", 1, "term_end")),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("subscriptions", 1, "notify_email")),
            "{fields:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("510123456") && text.contains("2026-02-30"),
            "{text}"
        );
        assert!(
            text.contains("subscriptions row 1 (id S1), field `seats`"),
            "{text}"
        );
    }

    #[test]
    fn references_must_resolve_and_agree() {
        let bad = GOOD.replace("\"customer_id\": \"C1\"", "\"customer_id\": \"C9\"");
        let raw = parse_json(bad.as_bytes()).unwrap();
        let err = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap_err();
        assert!(err.to_string().contains("no customer \"C9\""), "{err}");

        // A customer of another reseller, known from the database.
        let mut known = Known::default();
        known.resellers.insert("R2".into());
        known.customers.insert("C2".into(), "R2".into());
        let bad = GOOD.replace("\"customer_id\": \"C1\"", "\"customer_id\": \"C2\"");
        let raw = parse_json(bad.as_bytes()).unwrap();
        let err = check(&raw, &known, &any_calendar, |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("belongs to reseller \"R2\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_duplicates_are_refused() {
        let bad = GOOD.replace("\"plan\"", "\"plna\"");
        let raw = parse_json(bad.as_bytes()).unwrap();
        let err = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`plna`: unknown field") && text.contains("`plan`: missing"),
            "{text}"
        );

        let dup = GOOD.replace(
            "\"customers\": [",
            "\"customers\": [{\"id\": \"C1\", \"reseller_id\": \"R1\", \"name\": \"X\", \"email\": \"x@x.example\"},",
        );
        let raw = parse_json(dup.as_bytes()).unwrap();
        let err = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("customers row 2 (id C1), field `id`"),
            "{err}"
        );
    }

    #[test]
    fn csv_subscriptions_parse_with_text_numbers_and_booleans() {
        let csv = "id,reseller_id,customer_id,product_id,plan,billing,seats,assigned_licenses,term_start,term_end,auto_renew,notify_email\n\
                   S2,R1,C1,057O1WW6525L347,Revit,monthly_prepaid,5,0,2026-01-31,2027-01-31,no,\n";
        let raw = parse_csv(csv.as_bytes()).unwrap();
        let mut known = Known::default();
        known.resellers.insert("R1".into());
        known.customers.insert("C1".into(), "R1".into());
        let checked = check(&raw, &known, &any_calendar, |_| {}).unwrap();
        let s = &checked.subscriptions[0];
        assert!(!s.auto_renew);
        assert_eq!(s.billing, Billing::MonthlyPrepaid);
        assert!(s.notify_email.is_none());
    }

    #[test]
    fn term_ends_must_be_anniversaries() {
        let bad = GOOD.replace(
            "\"term_end\": \"2026-12-28\"",
            "\"term_end\": \"2026-12-27\"",
        );
        let raw = parse_json(bad.as_bytes()).unwrap();
        let err = check(&raw, &Known::default(), &any_calendar, |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("2026-12-27 is not an anniversary of term_start 2025-12-28 (the nearest is 2026-12-28)"),
            "{err}"
        );
        // A later term of an old subscription is fine, as is Feb 28 for a Feb 29 start.
        let later = GOOD.replace(
            "\"term_end\": \"2026-12-28\"",
            "\"term_end\": \"2028-12-28\"",
        );
        assert!(
            check(
                &parse_json(later.as_bytes()).unwrap(),
                &Known::default(),
                &any_calendar,
                |_| {}
            )
            .is_ok()
        );
        let leap = GOOD
            .replace(
                "\"term_start\": \"2025-12-28\"",
                "\"term_start\": \"2024-02-29\"",
            )
            .replace(
                "\"term_end\": \"2026-12-28\"",
                "\"term_end\": \"2027-02-28\"",
            );
        assert!(
            check(
                &parse_json(leap.as_bytes()).unwrap(),
                &Known::default(),
                &any_calendar,
                |_| {}
            )
            .is_ok()
        );
    }

    #[test]
    fn unknown_calendars_are_named() {
        let raw = parse_json(GOOD.as_bytes()).unwrap();
        let err = check(
            &raw,
            &Known::default(),
            &|c: &str| Err(format!("unknown calendar {c:?}")),
            |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field `calendar`: unknown calendar \"us\""),
            "{err}"
        );
    }
}
