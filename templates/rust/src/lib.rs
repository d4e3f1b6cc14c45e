//! __NAME__: a Propeller workload. It targets the `workload` world of `wit/proplet.wit`
//! (the WIT of the proplet that created it): the proplet calls `run`, which reads the
//! task's inputs, logs, and reports one result.

/// The component's side: bindings for `wit/`, and the handler the proplet calls. Only for
/// WebAssembly: natively (`cargo test`) there is no host to call.
#[cfg(target_arch = "wasm32")]
mod guest {
    wit_bindgen::generate!({ path: "wit", world: "workload", generate_all });

    use exports::propeller::proplet::handler::Guest;
    use propeller::proplet::log::{self, Level};
    use propeller::proplet::{report, task};

    struct Workload;

    impl Guest for Workload {
        fn run() -> Result<(), String> {
            let inputs = task::inputs();
            let started = format!("task {} started with {} inputs", task::id(), inputs.len());
            log::write(Level::Info, &started);
            let total = super::sum(&inputs)?;
            report::text(&format!("sum={total}")).map_err(|e| format!("cannot report: {e:?}"))
        }
    }

    export!(Workload);
}

/// The work itself, apart from the host API, so that `cargo test` runs it natively.
pub fn sum(inputs: &[String]) -> Result<i64, String> {
    inputs
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<i64>()
                .map_err(|e| format!("input {text:?} is not a whole number: {e}"))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_its_inputs() {
        assert_eq!(sum(&["40".into(), " 2".into()]), Ok(42));
        assert_eq!(sum(&[]), Ok(0));
    }

    #[test]
    fn a_bad_input_is_an_error() {
        assert!(sum(&["forty".into()]).is_err());
    }
}
