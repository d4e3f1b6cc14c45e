//! A WASI command: the shape of a "run it, stdout is the result" task.
//!
//! It greets whoever its arguments name and reports what it can see of its environment.
//! A few arguments change its behaviour, for tests:
//! - `exit N`  exits with status N after printing (a non-zero status is an error result);
//! - `flood`   writes to stdout without end (hits the output limit);
//! - `panic`   panics (a trap).

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match words.as_slice() {
        ["flood", ..] => flood(),
        ["panic", ..] => panic!("asked to panic"),
        _ => {}
    }
    let who = if words.is_empty() { "world".to_owned() } else { words.join(" ") };
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    println!("{greeting}, {who}!");
    let mut vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    vars.sort();
    println!("program: {}; env: [{}]", args.first().map_or("?", String::as_str), vars.join(", "));
    eprintln!("hello: done");
    if let ["exit", code, ..] = words.as_slice() {
        std::process::exit(code.parse().unwrap_or(1));
    }
}

fn flood() -> ! {
    let line = [b'x'; 1023];
    let mut out = std::io::stdout().lock();
    loop {
        if out.write_all(&line).and_then(|()| out.write_all(b"\n")).is_err() {
            std::process::exit(101);
        }
    }
}
