//! A component with plain exported functions: the shape of a "named export" component task.
//!
//! Start it with `"name":"greet","inputs":["\"world\""]` and the result is the WAVE text
//! `"\"Hello, world!\""`; inputs are WAVE values of the parameter types.

wit_bindgen::generate!({
    inline: r#"
        package example:greet;

        world greeter {
            /// Greets `name`.
            export greet: func(name: string) -> string;
            /// Adds two numbers.
            export add: func(a: s32, b: s32) -> s32;
            /// Sums a list.
            export sum: func(values: list<u32>) -> u64;
        }
    "#,
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("Hello, {name}!")
    }

    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn sum(values: Vec<u32>) -> u64 {
        values.iter().map(|&v| u64::from(v)).sum()
    }
}

export!(Greeter);
