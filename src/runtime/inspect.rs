//! `proplet inspect`: what a binary is, what it imports and exports, and which
//! capabilities it would need — read from its types, without running it.

use std::fmt;

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Engine, ExternType, Module};

use super::RuntimeError;
use super::workload::HANDLER_INTERFACE;

/// What `inspect` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// `core module` or `component`, and how a task would run it.
    pub kind: String,
    /// Imports, one line each.
    pub imports: Vec<String>,
    /// Exports with their types, one line each.
    pub exports: Vec<String>,
    /// Exports that binding generators add for their own use (componentize-py's
    /// `exports` instance, wit-bindgen's `cabi_*` functions), not meant as task names.
    pub internals: Vec<String>,
    /// Capabilities the imports ask for (filesystem, network, …).
    pub capabilities: Vec<&'static str>,
}

/// Inspects a core module or a component.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, RuntimeError> {
    let engine = Engine::default();
    if wasmparser::Parser::is_component(bytes) {
        let component = Component::from_binary(&engine, bytes).map_err(RuntimeError::compile)?;
        return Ok(inspect_component(&engine, &component));
    }
    let module = Module::from_binary(&engine, bytes).map_err(RuntimeError::compile)?;
    Ok(inspect_module(&module))
}

fn inspect_module(module: &Module) -> Inspection {
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}::{}: {}", i.module(), i.name(), extern_type(&i.ty())))
        .collect();
    let exports = module
        .exports()
        .map(|e| format!("{}: {}", e.name(), extern_type(&e.ty())))
        .collect();
    let kind = if module.get_export("_start").is_some() {
        "core module (WASI preview 1), a command: `_start` runs it, stdout is the result"
    } else {
        "core module (WASI preview 1), a reactor: a task's `name` picks the export to call"
    };
    Inspection::of(kind, imports, exports)
}

/// Whether an export line names a binding generator's own export.
fn is_internal(line: &str) -> bool {
    line.starts_with("exports#") || line.starts_with("cabi_") || line.starts_with("__")
}

impl Inspection {
    /// What was found: the binding generators' internals set apart from the `exports`, and
    /// the capabilities the `imports` ask for.
    fn of(kind: &str, imports: Vec<String>, exports: Vec<String>) -> Self {
        let (internals, exports) = exports.into_iter().partition(|line| is_internal(line));
        let capabilities = capabilities(imports.iter().map(String::as_str));
        Inspection {
            kind: kind.into(),
            imports,
            exports,
            internals,
            capabilities,
        }
    }

    /// The same, with the binding generators' internals listed among the exports.
    pub fn with_internals(mut self) -> Self {
        self.exports.append(&mut self.internals);
        self
    }
}

fn inspect_component(engine: &Engine, component: &Component) -> Inspection {
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut exports = Vec::new();
    let mut kind =
        "component (WASI preview 2): a task's `name` picks the export, inputs are WAVE values";
    for (name, item) in ty.exports(engine) {
        if name == HANDLER_INTERFACE {
            kind =
                "component on the propeller:proplet workload world: the proplet calls handler.run";
        } else if name.starts_with("wasi:cli/run@") && !kind.contains("workload") {
            kind = "component (WASI preview 2), a wasi:cli command: stdout is the result";
        }
        describe_item(engine, name, &item.ty, &mut exports);
    }
    Inspection::of(kind, imports, exports)
}

fn describe_item(engine: &Engine, name: &str, item: &ComponentItem, out: &mut Vec<String>) {
    match item {
        ComponentItem::ComponentFunc(f) => {
            let params: Vec<String> = f
                .params()
                .map(|(n, t)| format!("{n}: {}", type_name(&t)))
                .collect();
            let results: Vec<String> = f.results().map(|t| type_name(&t)).collect();
            out.push(format!(
                "{name}: func({}) -> ({})",
                params.join(", "),
                results.join(", ")
            ));
        }
        ComponentItem::ComponentInstance(inst) => {
            for (inner, e) in inst.exports(engine) {
                describe_item(engine, &format!("{name}#{inner}"), &e.ty, out);
            }
        }
        _ => out.push(format!("{name}: {}", kind_name(item))),
    }
}

fn kind_name(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
        _ => "item",
    }
}

fn type_name(ty: &wasmtime::component::Type) -> String {
    let text = format!("{ty:?}");
    text.split('(').next().unwrap_or(&text).to_ascii_lowercase()
}

fn extern_type(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => {
            let params: Vec<String> = f.params().map(|p| p.to_string()).collect();
            let results: Vec<String> = f.results().map(|r| r.to_string()).collect();
            format!("func({}) -> ({})", params.join(", "), results.join(", "))
        }
        ExternType::Memory(_) => "memory".into(),
        ExternType::Table(_) => "table".into(),
        ExternType::Global(_) => "global".into(),
        ExternType::Tag(_) => "tag".into(),
    }
}

/// Capabilities implied by import names, core (`wasi_snapshot_preview1::path_open`) or
/// component (`wasi:filesystem/types@0.2.0`).
fn capabilities<'a>(imports: impl Iterator<Item = &'a str>) -> Vec<&'static str> {
    const RULES: [(&str, &str); 9] = [
        (
            "wasi:filesystem",
            "filesystem (mounts; /tmp scratch is always there)",
        ),
        (
            "::path_open",
            "filesystem (mounts; /tmp scratch is always there)",
        ),
        (
            "wasi:sockets",
            "network (denied unless the operator allows it)",
        ),
        ("::sock_", "network (denied unless the operator allows it)"),
        (
            "wasi:http/outgoing-handler",
            "outgoing HTTP (the start's `http` origins, within PROPLET_HTTP_ALLOW)",
        ),
        (
            "wasi:config/store",
            "configuration values (the start's `config`, and `credentials` within PROPLET_CONFIG_ALLOW)",
        ),
        (
            "wasi:keyvalue/store",
            "key-value buckets (the start's `kv`, within PROPLET_KV_BUCKETS)",
        ),
        (
            "propeller:proplet",
            "the proplet workload API (task, report, log, trace)",
        ),
        (
            "wasi:cli/environment",
            "environment variables (the task's env only)",
        ),
    ];
    let mut found: Vec<&'static str> = Vec::new();
    for name in imports {
        for (needle, what) in RULES {
            if name.contains(needle) && !found.contains(&what) {
                found.push(what);
            }
        }
    }
    found
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kind: {}", self.kind)?;
        for (title, items) in [("imports", &self.imports), ("exports", &self.exports)] {
            writeln!(f, "{title}:")?;
            for item in items {
                writeln!(f, "  {item}")?;
            }
        }
        if !self.internals.is_empty() {
            let n = self.internals.len();
            writeln!(
                f,
                "  ({n} binding-generator internals hidden; proplet inspect --all lists them)"
            )?;
        }
        writeln!(f, "capabilities:")?;
        if self.capabilities.is_empty() {
            writeln!(f, "  none beyond computation")?;
        }
        for c in &self.capabilities {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_modules_are_described() {
        let bytes = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "path_open" (func (param i32)))
            (func (export "add") (param i32 i32) (result i32) local.get 0))"#,
        )
        .unwrap();
        let i = inspect(&bytes).unwrap();
        assert!(i.kind.contains("reactor"), "{i}");
        assert_eq!(i.exports, vec!["add: func(i32, i32) -> (i32)"]);
        assert!(i.capabilities[0].starts_with("filesystem"));
        let generated = wat::parse_str(
            r#"(module (memory (export "memory") 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) local.get 0)
            (func (export "run")))"#,
        )
        .unwrap();
        let i = inspect(&generated).unwrap();
        assert_eq!(i.internals.len(), 1, "{i}");
        assert!(
            i.to_string()
                .contains("1 binding-generator internals hidden"),
            "{i}"
        );
        assert!(!i.to_string().contains("cabi_realloc"), "{i}");
        let all = i.with_internals();
        assert!(all.to_string().contains("cabi_realloc") && all.internals.is_empty());
    }

    #[test]
    fn components_are_described() {
        let bytes = wat::parse_str(r#"(component
            (core module $m (func (export "add") (param i32 i32) (result i32) local.get 0))
            (core instance $i (instantiate $m))
            (func (export "add") (param "a" s32) (param "b" s32) (result s32) (canon lift (core func $i "add"))))"#)
        .unwrap();
        let i = inspect(&bytes).unwrap();
        assert!(i.kind.contains("WAVE"), "{i}");
        assert_eq!(i.exports, vec!["add: func(a: s32, b: s32) -> (s32)"]);
        assert!(i.to_string().contains("none beyond computation"));
        assert!(inspect(b"junk").is_err());
    }
}
