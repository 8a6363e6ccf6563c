//! Every command given malformed input — bad JSON, bad flags, missing files, a file that is
//! not what it should be, a server that is not there — exits non-zero with an error line
//! that names what is wrong: never a panic, never a backtrace, never silence.

use std::time::Duration;

use anyhow::Result;

/// One case: the arguments and a word the first error line must hold.
struct Case {
    args: Vec<String>,
    names: &'static str,
}

fn case(args: &[&str], names: &'static str) -> Case {
    Case {
        args: args.iter().map(|a| a.to_string()).collect(),
        names,
    }
}

#[test]
fn malformed_input_gets_one_clear_error_line_from_every_command() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let not_creds = dir.path().join("not.creds");
    std::fs::write(&not_creds, "this is not a creds file\n")?;
    let png = dir.path().join("graph.toml");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")?;
    let bad_json = dir.path().join("graph.json");
    std::fs::write(&bad_json, "{\"name\": ")?;
    let not_gguf = dir.path().join("model.gguf");
    std::fs::write(&not_gguf, "GGUF but not really")?;
    let data = data.display().to_string();
    let not_creds = not_creds.display().to_string();
    let png = png.display().to_string();
    let bad_json = bad_json.display().to_string();
    let not_gguf = not_gguf.display().to_string();
    // A port nothing listens on: commands that need a server say they cannot reach it.
    let nowhere = "nats://127.0.0.1:1";
    let g = |rest: &[&str]| -> Vec<String> {
        ["--data-dir", &data, "--server", nowhere]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let cases = vec![
        case(&["--no-such-flag"], "--no-such-flag"),
        case(&["no-such-command"], "no-such-command"),
        case(&["task", "submit", "--capability", "x.y"], "NATS_URL"),
        Case {
            args: g(&["task", "submit", "--capability", "x.y", "--input", "{"]),
            names: "JSON",
        },
        Case {
            args: g(&[
                "task",
                "submit",
                "--capability",
                "Not A Capability",
                "--input",
                "{}",
            ]),
            names: "capability",
        },
        Case {
            args: g(&["task", "ls"]),
            names: "127.0.0.1:1",
        },
        Case {
            args: g(&["task", "graph", "submit", "missing.toml"]),
            names: "missing.toml",
        },
        Case {
            args: g(&["task", "graph", "submit", &png]),
            names: "graph.toml",
        },
        Case {
            args: g(&[
                "vote",
                "propose",
                "--question",
                "q",
                "--payload",
                "{",
                "--voter",
                "UX",
            ]),
            names: "payload",
        },
        Case {
            args: g(&["vote", "cast", "p-1", "maybe"]),
            names: "maybe",
        },
        Case {
            args: g(&["events", "tail", "--subject", "murmur.v1..evt"]),
            names: "127.0.0.1:1",
        },
        Case {
            args: g(&["replay", "--from-seq", "nope"]),
            names: "nope",
        },
        Case {
            args: g(&["dlq", "redrive", "not-a-number"]),
            names: "not-a-number",
        },
        Case {
            args: g(&["up", "--sync-interval", "sometimes"]),
            names: "sometimes",
        },
        Case {
            args: g(&["up", "--sync-interval", "always"]),
            names: "--sync-interval sets the server murmur up starts",
        },
        Case {
            args: g(&["agent", "run", "tool"]),
            names: "--root",
        },
        Case {
            args: g(&["agent", "run", "mcp"]),
            names: "--mcp-command",
        },
        Case {
            args: g(&["agent", "run", "mcp", "--mcp-command", "\"unclosed"]),
            names: "--mcp-command",
        },
        Case {
            args: g(&["agent", "run", "bridge"]),
            names: "--protocol-agent",
        },
        Case {
            args: g(&["agent", "run", "inference", "--model", &not_gguf]),
            names: "GGUF",
        },
        Case {
            args: g(&["agent", "run", "worker", "--model", "m.gguf"]),
            names: "--model",
        },
        Case {
            args: g(&["gateway", "--agent", "Not Valid"]),
            names: "agent",
        },
        Case {
            args: g(&["kb", "get", "space", "fact"]),
            names: "127.0.0.1:1",
        },
        Case {
            args: g(&["flake", "generate", &bad_json, "-o", "out"]),
            names: "graph.json",
        },
        Case {
            args: g(&["flake", "generate", "missing.toml", "-o", "out"]),
            names: "missing.toml",
        },
        Case {
            args: g(&["flake", "check", &png]),
            names: "graph.toml",
        },
        Case {
            args: [
                "--data-dir",
                &data,
                "--server",
                nowhere,
                "--creds",
                &not_creds,
                "task",
                "ls",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            names: "not.creds",
        },
        Case {
            args: g(&["creds", "issue", "--role", "emperor", "--name", "x"]),
            names: "emperor",
        },
        Case {
            args: g(&["inference", "generate", "--model", &not_gguf, "hi"]),
            names: "GGUF",
        },
        Case {
            args: g(&["ask", "--explain", "nope"]),
            names: "127.0.0.1:1",
        },
    ];
    let mut problems = Vec::new();
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let out = murmur_e2e::murmur_output(&args, Duration::from_secs(60))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_default()
            .to_string();
        let shown = format!("murmur {}: {first:?}", args.join(" "));
        if out.status.success() {
            problems.push(format!("{shown} exited 0"));
        } else if stderr.contains("panicked at") || stderr.contains("stack backtrace") {
            problems.push(format!("{shown} panicked:\n{stderr}"));
        } else if first.is_empty() {
            problems.push(format!("{shown} printed no error line:\n{stderr}"));
        } else if !first.contains(case.names) {
            problems.push(format!("{shown} does not name {:?}", case.names));
        } else {
            eprintln!("ok: {shown}");
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
