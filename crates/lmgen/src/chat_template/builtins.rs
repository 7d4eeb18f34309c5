//! The functions and filters transformers adds to its Jinja environment for chat templates
//! (`transformers/utils/chat_template_utils.py`, `_compile_jinja_template`), with Python's output:
//! - `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)` is
//!   `json.dumps` with the same arguments: no HTML escaping (minijinja's own `tojson` escapes
//!   `<>&'`), Python's separators (`", "` / `": "`), float repr and indentation.
//! - `strftime_now(fmt)` is `datetime.now().strftime(fmt)`. Difference: lmgen formats the time in
//!   UTC (transformers uses the machine's local time zone, which is UTC on most servers).

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// `json.dumps` settings.
struct PyJson {
    /// `indent`: `None` writes one line.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn bad(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// The `tojson` filter; positional arguments follow transformers' signature
/// (`ensure_ascii, indent, separators, sort_keys`).
pub fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(bad(format!(
            "tojson takes at most {} arguments",
            names.len()
        )));
    }
    let mut opts: [Value; 4] = Default::default();
    for (i, name) in names.iter().enumerate() {
        if let Some(v) = args.get(i) {
            opts[i] = v.clone();
        }
        if kwargs.has(name) {
            opts[i] = kwargs.get(name)?;
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = opts;
    let indent = match indent.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::String => Some(indent.to_string()),
        ValueKind::Number if indent.is_integer() => {
            let n = i64::try_from(indent.clone())?;
            Some(" ".repeat(usize::try_from(n.clamp(0, 64)).unwrap_or(0)))
        }
        _ => {
            return Err(bad(format!(
                "tojson: `indent` must be an integer or a string, got {indent}"
            )))
        }
    };
    let (item_sep, key_sep) = match separators.kind() {
        ValueKind::Undefined | ValueKind::None if indent.is_some() => (",".into(), ": ".into()),
        ValueKind::Undefined | ValueKind::None => (", ".into(), ": ".into()),
        _ => {
            let item = separators.get_item_by_index(0)?;
            let key = separators.get_item_by_index(1)?;
            match (item.as_str(), key.as_str()) {
                (Some(i), Some(k)) => (i.to_string(), k.to_string()),
                _ => return Err(bad("tojson: `separators` must be two strings".into())),
            }
        }
    };
    let py = PyJson {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.is_true(),
        sort_keys: sort_keys.is_true(),
    };
    let mut out = String::new();
    py.write(value, 0, &mut out)?;
    Ok(Value::from(out))
}

impl PyJson {
    fn newline(&self, level: usize, out: &mut String) {
        if let Some(indent) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(indent);
            }
        }
    }

    /// Writes `items` between `open` and `close` as `json.dumps` lays them out.
    fn container<T>(
        &self,
        (open, close): (char, char),
        items: &[T],
        level: usize,
        out: &mut String,
        mut item: impl FnMut(&T, &mut String) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if !items.is_empty() {
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&self.item_sep);
                }
                self.newline(level + 1, out);
                item(it, out)?;
            }
            self.newline(level, out);
        }
        out.push(close);
        Ok(())
    }

    fn write(&self, v: &Value, level: usize, out: &mut String) -> Result<(), Error> {
        if level > 256 {
            return Err(bad("tojson: value nested too deeply".into()));
        }
        match v.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
            ValueKind::Number => out.push_str(&py_float(f64::try_from(v.clone())?)),
            ValueKind::String => self.string(v.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container(('[', ']'), &items, level, out, |x, out| {
                    self.write(x, level + 1, out)
                })?;
            }
            ValueKind::Map => {
                let mut items = Vec::new();
                for key in v.try_iter()? {
                    let value = v.get_item(&key)?;
                    items.push((key_string(&key)?, value));
                }
                if self.sort_keys {
                    items.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(('{', '}'), &items, level, out, |(k, x), out| {
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(x, level + 1, out)
                })?;
            }
            kind => {
                return Err(bad(format!(
                    "tojson: a value of type {kind} is not JSON serializable"
                )))
            }
        }
        Ok(())
    }

    /// A JSON string as Python writes it (`ensure_ascii` escapes non-ASCII as `\uXXXX`).
    fn string(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// A dict key as `json.dumps` converts it: strings as they are, numbers, booleans and None spelled.
fn key_string(key: &Value) -> Result<String, Error> {
    Ok(match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number if key.is_integer() => key.to_string(),
        ValueKind::Number => py_float(f64::try_from(key.clone())?),
        kind => {
            return Err(bad(format!(
                "tojson: keys must be str, int, float, bool or None, not {kind}"
            )))
        }
    })
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation below 1e-4 and from
/// 1e16 on (`1e-05`, `1e+16`), `.0` on whole numbers; `NaN`, `Infinity` as `json.dumps` writes them.
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{first}{rest}e{exp_sign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A UTC time broken down.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Monday.
    weekday: usize,
    /// 1-based day of the year.
    yday: u32,
}

impl Civil {
    /// From seconds since the Unix epoch (Howard Hinnant's `civil_from_days`).
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][month as usize - 1];
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            weekday: (days + 3).rem_euclid(7) as usize,
            yday: before + day + u32::from(leap && month > 2),
        }
    }
}

/// `strftime_now(format)`: the current time (UTC), or the pinned one (Unix seconds), formatted
/// like Python's `strftime` on glibc, including the `-` flag for no padding (`%-d`).
pub fn strftime_now(format: &str, pinned: Option<i64>) -> Result<String, Error> {
    let secs = pinned.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    Ok(strftime(format, &Civil::from_unix(secs)))
}

fn strftime(format: &str, t: &Civil) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let pad = spec != Some('-');
        if !pad {
            spec = chars.next();
        }
        let num = |n: u32, width: usize| {
            if pad {
                format!("{n:0width$}")
            } else {
                n.to_string()
            }
        };
        let hour12 = if t.hour.is_multiple_of(12) {
            12
        } else {
            t.hour % 12
        };
        let month = MONTHS[t.month as usize - 1];
        let weekday = WEEKDAYS[t.weekday];
        let text = match spec {
            Some('Y') => t.year.to_string(),
            Some('y') => num(t.year.rem_euclid(100) as u32, 2),
            Some('m') => num(t.month, 2),
            Some('d') => num(t.day, 2),
            Some('e') => format!("{:>2}", t.day),
            Some('H') => num(t.hour, 2),
            Some('I') => num(hour12, 2),
            Some('M') => num(t.minute, 2),
            Some('S') => num(t.second, 2),
            Some('j') => num(t.yday, 3),
            Some('p') => (if t.hour < 12 { "AM" } else { "PM" }).into(),
            Some('B') => month.into(),
            Some('b') | Some('h') => month[..3].into(),
            Some('A') => weekday.into(),
            Some('a') => weekday[..3].into(),
            Some('u') => (t.weekday + 1).to_string(),
            Some('w') => ((t.weekday + 1) % 7).to_string(),
            Some('F') => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
            Some('T') => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
            Some('%') => "%".into(),
            Some(other) => format!("%{}{other}", if pad { "" } else { "-" }),
            None => "%".into(),
        };
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (123.456, "123.456"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_formats_like_python() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = Civil::from_unix(1_709_211_909);
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %a %A %b %B %j %I%p %-d %y %%", &t),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 01PM 29 24 %"
        );
        assert_eq!(strftime("%d %b %Y", &Civil::from_unix(0)), "01 Jan 1970");
    }
}
