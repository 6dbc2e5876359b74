//! Renders Hugging Face chat templates with minijinja, set up like the jinja2 environment
//! transformers uses: trim_blocks, lstrip_blocks, loop controls, `raise_exception(msg)`,
//! `strftime_now(fmt)`, a `tojson` filter that writes what Python's `json.dumps` writes,
//! and Python string/dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, ...).

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};

use super::strftime;
use crate::{Error, Result};

/// The name render errors give a template, which has no file of its own once loaded.
pub(super) const TEMPLATE_NAME: &str = "chat template (Jinja)";

/// Renders `source` with `context`, whose strings hold `input_bytes` bytes; errors carry
/// the template line and, for `raise_exception`, the template's own message.
///
/// A template comes with a model folder, so it is untrusted: its work is bounded by
/// minijinja's fuel (instructions executed) and its output by [`output_limit`], both
/// far above what a chat template spends on a conversation of that size. Without them
/// `{{ 9999999 * (1, 2) }}` renders for seconds into hundreds of megabytes.
pub(super) fn render(source: &str, context: Value, input_bytes: usize) -> Result<String> {
    let mut env = environment();
    env.set_fuel(Some(fuel(input_bytes)));
    let origin = Path::new(TEMPLATE_NAME);
    let template = env
        .template_from_str(source)
        .map_err(|e| template_error(&e, source, origin))?;
    let mut out = BoundedOutput::new(output_limit(input_bytes));
    let rendered = template.render_captured_to(context, &mut out).map(drop);
    match rendered {
        Ok(_) => String::from_utf8(out.bytes)
            .map_err(|_| Error::format(origin, "render", "the template wrote invalid UTF-8")),
        Err(_) if out.overflowed => Err(Error::format(
            origin,
            "render",
            format!(
                "the rendered prompt passed {} bytes ({input_bytes} bytes of messages): \
                 the template repeats or loops far beyond its input",
                out.limit
            ),
        )),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::format(
            origin,
            "render",
            format!(
                "the template ran past {} instructions ({input_bytes} bytes of messages): \
                 it loops far beyond its input",
                fuel(input_bytes)
            ),
        )),
        Err(e) => Err(template_error(&e, source, origin)),
    }
}

/// Instructions a render may execute: a fixed allowance plus a generous amount per
/// input byte (real templates spend tens of instructions per message).
fn fuel(input_bytes: usize) -> u64 {
    1_000_000 + 64 * input_bytes as u64
}

/// Bytes a render may write: the messages with room for the template's own text.
fn output_limit(input_bytes: usize) -> usize {
    (1 << 20) + 8 * input_bytes
}

/// A render's output, refusing writes past `limit` so a runaway template stops there.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BoundedOutput {
    fn new(limit: usize) -> Self {
        BoundedOutput {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the render's output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parses `source` without rendering it, so a bad template file fails when it is
/// loaded; errors name `origin`, the file.
pub(super) fn check_syntax(source: &str, origin: &Path) -> Result<()> {
    environment()
        .template_from_str(source)
        .map(drop)
        .map_err(|e| template_error(&e, source, origin))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    // Debug mode keeps the span of a failing expression, which errors quote.
    env.set_debug(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env.add_filter("tojson", tojson);
    env
}

/// The message of a template's `raise_exception(msg)`, kept apart from engine errors.
#[derive(Debug)]
struct TemplateRaised(String);

impl std::fmt::Display for TemplateRaised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateRaised {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(TemplateRaised(message)),
    )
}

/// Python's `datetime.now().strftime(fmt)`, in UTC (see strftime.rs for why).
fn strftime_now(format: &str) -> std::result::Result<String, minijinja::Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime::format_utc(format, now)
        .map_err(|msg| minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// Python's `separators=(item, key)`, given as a list or tuple of two strings.
fn separators(
    given: Option<Vec<String>>,
) -> std::result::Result<Option<(String, String)>, minijinja::Error> {
    match given.as_deref() {
        None => Ok(None),
        Some([item, key]) => Ok(Some((item.clone(), key.clone()))),
        Some(other) => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson: separators must be two strings, got {}",
                other.len()
            ),
        )),
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, which is `json.dumps` with those arguments: no HTML escaping
/// (unlike jinja2's and minijinja's own `tojson`) and Python's `", "`/`": "` separators.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let separators = separators(kwargs.get("separators")?)?;
    let options = JsonOptions {
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        indent,
        separators: separators.unwrap_or_else(|| {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_string(), ": ".to_string())
        }),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, &options, 0)?;
    Ok(out)
}

struct JsonOptions {
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<usize>,
    /// (between items, between a key and its value), as Python's `separators`.
    separators: (String, String),
}

fn write_json(
    out: &mut String,
    value: &Value,
    options: &JsonOptions,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value)),
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or(""), options),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, ('[', ']'), &items, options, depth, |out, item| {
                write_json(out, item, options, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if options.sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            write_container(out, ('{', '}'), &keys, options, depth, |out, key| {
                write_json_string(out, &key.to_string(), options);
                out.push_str(&options.separators.1);
                write_json(out, &value.get_item(key)?, options, depth + 1)
            })?;
        }
        other => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of kind {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// Writes `open items close` with Python's layout: inline, or one item per line when
/// `indent` is set; empty containers stay `[]`/`{}` either way.
fn write_container(
    out: &mut String,
    (open, close): (char, char),
    items: &[Value],
    options: &JsonOptions,
    depth: usize,
    mut write_item: impl FnMut(&mut String, &Value) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = options.indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&options.separators.0);
        }
        newline(out, depth + 1);
        write_item(out, item)?;
    }
    if !items.is_empty() {
        newline(out, depth);
    }
    out.push(close);
    Ok(())
}

fn write_json_string(out: &mut String, s: &str, options: &JsonOptions) {
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
            c if (c as u32) < 0x20 || (options.ensure_ascii && !(' '..='~').contains(&c)) => {
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

/// A number as Python's `json.dumps` writes it: integers as they are, floats as `repr`
/// (`1.0`, `1e+16`, `1.5e-07`, `NaN`, `Infinity`).
fn python_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    let float = f64::try_from(value.clone()).unwrap_or(f64::NAN);
    if float.is_nan() {
        return "NaN".into();
    }
    if float.is_infinite() {
        return if float > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's Debug picks the same shortest digits and the same switch to exponent form
    // (below 1e-4, from 1e16) as Python's repr; only the exponent is spelled differently.
    let debug = format!("{float:?}");
    match debug.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => debug,
    }
}

/// Turns a minijinja error into the crate's error: the template line, the failing
/// expression when the engine knows it, and either the template's own
/// `raise_exception` message or the engine's message.
fn template_error(err: &minijinja::Error, source: &str, origin: &Path) -> Error {
    let message = match raised_message(err) {
        Some(raised) => format!("the template raised an exception: {raised}"),
        None => engine_message(err),
    };
    let Some(line) = err.line() else {
        return Error::format(origin, "render", message);
    };
    let line_text = clip(source.lines().nth(line.saturating_sub(1)).unwrap_or(""));
    let location = match err.range().and_then(|r| source.get(r)).map(clip) {
        Some(span) if span != line_text => format!("at `{span}` in `{line_text}`"),
        _ => format!("in `{line_text}`"),
    };
    Error::format(
        origin,
        format!("line {line}"),
        format!("{message} ({location})"),
    )
}

/// Template text short enough to quote in an error.
fn clip(text: &str) -> String {
    text.trim().chars().take(120).collect()
}

fn raised_message(err: &minijinja::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(raised) = e.downcast_ref::<TemplateRaised>() {
            return Some(raised.0.clone());
        }
        cause = e.source();
    }
    None
}

fn engine_message(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn render_ok(source: &str, ctx: Value) -> String {
        render(source, ctx, 0).unwrap()
    }

    /// Renders `{{ v | tojson(args) }}` for a dict written as a Jinja literal.
    fn tojson_of_sample(args: &str) -> String {
        let set = r#"{% set v = {"name": "add", "args": [1, 2.5, true, none], "text": "a<b> & \"c\"\n é"} %}"#;
        render_ok(&format!("{set}{{{{ v | tojson{args} }}}}"), context! {})
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        assert_eq!(
            tojson_of_sample(""),
            r#"{"name": "add", "args": [1, 2.5, true, null], "text": "a<b> & \"c\"\n é"}"#
        );
        assert_eq!(
            tojson_of_sample("(indent=2)"),
            "{\n  \"name\": \"add\",\n  \"args\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"text\": \"a<b> & \\\"c\\\"\\n é\"\n}"
        );
        assert_eq!(
            tojson_of_sample("(ensure_ascii=true, sort_keys=true, separators=[',', ':'])"),
            r#"{"args":[1,2.5,true,null],"name":"add","text":"a<b> & \"c\"\n \u00e9"}"#
        );
        assert_eq!(render_ok("{{ [] | tojson(indent=4) }}", context! {}), "[]");
    }

    #[test]
    fn python_float_repr() {
        let repr = |f: f64| python_number(&Value::from(f));
        assert_eq!(repr(1.0), "1.0");
        assert_eq!(repr(0.1), "0.1");
        assert_eq!(repr(1e16), "1e+16");
        assert_eq!(repr(1.5e-7), "1.5e-07");
        assert_eq!(repr(123456.75), "123456.75");
        assert_eq!(repr(f64::INFINITY), "Infinity");
    }

    fn render_err(source: &str) -> String {
        render(source, context! {}, 100).unwrap_err().to_string()
    }

    #[test]
    fn runaway_output_stops_at_the_limit() {
        let err = render_err(r#"{% for i in range(1000) %}{{ "x" * 1000000 }}{% endfor %}"#);
        assert!(
            err.contains("the rendered prompt passed 1049376 bytes"),
            "{err}"
        );
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        // The first is a fuzzer finding: printing a repeated tuple costs fuel per item.
        for source in [
            r#"{{ 6666666 * (4, "") }}"#,
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        ] {
            let err = render_err(source);
            assert!(
                err.contains("ran past 1006400 instructions"),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = check_syntax(
            "ok\n{% if x %}\n{{ x + }}\n{% endif %}",
            Path::new("t.jinja"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.jinja: line 3"), "{err}");
        assert!(err.contains("{{ x + }}"), "{err}");
    }
}
