//! Worst-case stack use of entry functions in a linked x86_64 ELF image, from the
//! disassembly (`objdump -d -C`), against a budget.
//!
//! ```text
//! stack-check IMAGE BUDGET_BYTES PREFIX...
//! ```
//!
//! For every function: its frame is the return address, the pushes of its prologue
//! and every `sub $N,%rsp` there (an inline stack probe's loop, `mov %rsp,%r11;
//! sub $N,%r11; ...`, counts `N`). Its depth is its frame plus the deepest direct
//! callee; a tail jump to another function adds the callee's depth without our
//! frame. Every function whose name starts with one of the PREFIXes is an entry:
//! the report gives its depth and the call chain that reaches it, the largest
//! frames in the image, and fails (exit 1) when an entry's depth or any frame
//! reachable from an entry is over the budget. Indirect calls (`call *...`, e.g.
//! `core::fmt` through a vtable) cannot be followed; they are counted and listed, and
//! their targets should be small.
use std::collections::HashMap;
use std::process::{Command, ExitCode};

#[derive(Default)]
struct Func {
    name: String,
    frame: u64,
    calls: Vec<u64>,
    tails: Vec<u64>,
    indirect: usize,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// `$0x1a0,%rsp` -> (0x1a0, "%rsp")
fn imm_reg(ops: &str) -> Option<(u64, &str)> {
    let (imm, reg) = ops.split_once(',')?;
    Some((hex(imm.strip_prefix('$')?)?, reg.trim()))
}

/// The 8-byte words of the image's `.got` (from `objdump -s -j .got`), by address:
/// calls to `memcpy` and friends go through it.
fn parse_got(text: &str) -> HashMap<u64, u64> {
    let mut bytes: Vec<(u64, u8)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(addr) = words.next().and_then(hex) else {
            continue;
        };
        if !line.starts_with(' ') {
            continue;
        }
        let mut a = addr;
        for w in words.take(4) {
            if w.len() % 2 != 0 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                break;
            }
            for i in (0..w.len()).step_by(2) {
                if let Ok(b) = u8::from_str_radix(&w[i..i + 2], 16) {
                    bytes.push((a, b));
                    a += 1;
                }
            }
        }
    }
    let mut got = HashMap::new();
    for c in bytes.chunks_exact(8) {
        let v = c
            .iter()
            .rev()
            .fold(0u64, |v, &(_, b)| (v << 8) | u64::from(b));
        got.insert(c[0].0, v);
    }
    got
}

fn parse(text: &str, got: &HashMap<u64, u64>) -> (HashMap<u64, Func>, Vec<u64>) {
    let mut funcs: HashMap<u64, Func> = HashMap::new();
    let mut order = Vec::new();
    let mut cur: Option<u64> = None;
    // Prologue state of the current function.
    let mut in_prologue = false;
    let mut probe_loop = false;
    // Registers holding an address loaded from the GOT or by `lea` (a candidate
    // call target; kept if it turns out to be a function).
    let mut regs: HashMap<String, u64> = HashMap::new();
    for line in text.lines() {
        // "0000000000012340 <name>:"
        if let Some((addr, rest)) = line.split_once(" <") {
            if let (Some(a), Some(name)) = (hex(addr), rest.strip_suffix(">:")) {
                funcs.insert(
                    a,
                    Func {
                        name: name.to_string(),
                        frame: 8,
                        ..Func::default()
                    },
                );
                order.push(a);
                cur = Some(a);
                in_prologue = true;
                probe_loop = false;
                regs.clear();
                continue;
            }
        }
        // "   12340:\tmnemonic operands   # 227978 <memcpy+0x1038>"
        let Some((_, insn)) = line.split_once(":\t") else {
            continue;
        };
        let Some(f) = cur.and_then(|c| funcs.get_mut(&c)) else {
            continue;
        };
        let (insn, comment) = insn.split_once('#').unwrap_or((insn, ""));
        let insn = insn.trim();
        // The address an %rip-relative operand names.
        let named = comment.split_whitespace().next().and_then(hex);
        let (mnem, ops) = insn.split_once(char::is_whitespace).unwrap_or((insn, ""));
        let ops = ops.trim();
        let target = || {
            let (a, name) = ops.split_once(" <")?;
            Some((hex(a)?, name.contains('+')))
        };
        let dest = ops.rsplit(',').next().unwrap_or("").trim().to_string();
        match mnem {
            "call" | "callq" | "jmp" | "jmpq" => {
                in_prologue = false;
                let tail = mnem.starts_with('j');
                let resolved = if let Some(ind) = ops.strip_prefix('*') {
                    if ind.ends_with("(%rip)") {
                        named.and_then(|a| got.get(&a).copied())
                    } else {
                        regs.get(ind).copied()
                    }
                } else {
                    match target() {
                        Some((a, false)) => Some(a),
                        // A jump inside a function is not a call.
                        Some((_, true)) if tail => continue,
                        Some((a, true)) => Some(a),
                        None => None,
                    }
                };
                match (resolved, tail) {
                    (Some(a), false) => f.calls.push(a),
                    (Some(a), true) => f.tails.push(a),
                    (None, _) => f.indirect += 1,
                }
            }
            "mov" | "movq" if ops.ends_with("(%rip)") || ops.contains("(%rip),") => {
                match named.and_then(|a| got.get(&a).copied()) {
                    Some(t) => regs.insert(dest, t),
                    None => regs.remove(&dest),
                };
            }
            "lea" | "leaq" if ops.contains("(%rip),") => {
                match named {
                    Some(t) => regs.insert(dest, t),
                    None => regs.remove(&dest),
                };
            }
            "push" | "pushq" if in_prologue => f.frame += 8,
            "sub" | "subq" if in_prologue => match imm_reg(ops) {
                Some((n, "%r11")) => {
                    f.frame += n;
                    probe_loop = true;
                }
                Some((n, "%rsp")) if !(probe_loop && n == 0x1000) => f.frame += n,
                _ => {}
            },
            m if in_prologue && m.starts_with('j') => {
                // The inline probe loop's back edge ends the loop, not the prologue.
                if probe_loop {
                    probe_loop = false;
                } else {
                    in_prologue = false;
                }
            }
            "ret" | "retq" | "ud2" => in_prologue = false,
            _ => {
                if regs.contains_key(&dest) {
                    regs.remove(&dest);
                }
            }
        }
    }
    // Keep only edges to function starts (a loaded address may be data).
    let starts: std::collections::HashSet<u64> = funcs.keys().copied().collect();
    for f in funcs.values_mut() {
        let before = f.calls.len() + f.tails.len();
        f.calls.retain(|a| starts.contains(a));
        f.tails.retain(|a| starts.contains(a));
        f.indirect += before - f.calls.len() - f.tails.len();
    }
    (funcs, order)
}

struct Depths<'a> {
    funcs: &'a HashMap<u64, Func>,
    memo: HashMap<u64, (u64, Option<u64>)>,
    active: Vec<u64>,
    recursive: Vec<u64>,
}

impl Depths<'_> {
    /// (worst depth from entering `a`, the callee on that path)
    fn depth(&mut self, a: u64) -> u64 {
        if let Some(&(d, _)) = self.memo.get(&a) {
            return d;
        }
        let Some(f) = self.funcs.get(&a) else {
            return 0;
        };
        if self.active.contains(&a) {
            if !self.recursive.contains(&a) {
                self.recursive.push(a);
            }
            return f.frame;
        }
        self.active.push(a);
        let mut best = (f.frame, None);
        for &c in &f.calls {
            let d = f.frame + self.depth(c);
            if d > best.0 {
                best = (d, Some(c));
            }
        }
        for &c in &f.tails {
            let d = self.depth(c);
            if d > best.0 {
                best = (d, Some(c));
            }
        }
        self.active.pop();
        self.memo.insert(a, best);
        best.0
    }

    fn chain(&self, mut a: u64) -> Vec<u64> {
        let mut v = vec![a];
        while let Some(&(_, Some(n))) = self.memo.get(&a) {
            if v.contains(&n) {
                break;
            }
            v.push(n);
            a = n;
        }
        v
    }

    /// Every function reachable from `a` (direct calls and tail jumps).
    fn reachable(&self, a: u64, seen: &mut Vec<u64>) {
        if seen.contains(&a) {
            return;
        }
        seen.push(a);
        if let Some(f) = self.funcs.get(&a) {
            for &c in f.calls.iter().chain(&f.tails) {
                self.reachable(c, seen);
            }
        }
    }
}

fn short(name: &str) -> String {
    let n: String = name.chars().take(110).collect();
    if n.len() < name.len() {
        n + "…"
    } else {
        n
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: stack-check IMAGE BUDGET_BYTES PREFIX...");
        return ExitCode::from(2);
    }
    let Ok(budget) = args[2].parse::<u64>() else {
        eprintln!("stack-check: budget {:?} is not a number of bytes", args[2]);
        return ExitCode::from(2);
    };
    let out = match Command::new("objdump")
        .args(["-d", "-C", "--no-show-raw-insn", "-M", "att", &args[1]])
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "stack-check: objdump {} failed: {}",
                args[1],
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("stack-check: cannot run objdump: {e}");
            return ExitCode::from(2);
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let got = match Command::new("objdump")
        .args(["-s", "-j", ".got", &args[1]])
        .output()
    {
        Ok(o) if o.status.success() => parse_got(&String::from_utf8_lossy(&o.stdout)),
        // No .got section: nothing to resolve through it.
        _ => HashMap::new(),
    };
    let (funcs, order) = parse(&text, &got);
    let mut d = Depths {
        funcs: &funcs,
        memo: HashMap::new(),
        active: Vec::new(),
        recursive: Vec::new(),
    };
    let prefixes = &args[3..];
    let entries: Vec<u64> = order
        .iter()
        .copied()
        .filter(|a| {
            prefixes
                .iter()
                .any(|p| funcs[a].name.starts_with(p.as_str()))
        })
        .collect();
    if entries.is_empty() {
        eprintln!(
            "stack-check: no function in {} starts with {prefixes:?}",
            args[1]
        );
        return ExitCode::from(2);
    }
    let mut ok = true;
    println!(
        "stack budget {budget} bytes, {} functions in {}",
        funcs.len(),
        args[1]
    );
    let mut reach = Vec::new();
    for &e in &entries {
        let depth = d.depth(e);
        let over = depth > budget;
        ok &= !over;
        println!(
            "{} {:>7} bytes  {}",
            if over { "OVER" } else { "ok  " },
            depth,
            funcs[&e].name
        );
        for a in d.chain(e).iter().skip(1).take(12) {
            println!(
                "             {:>6}  {}",
                funcs[a].frame,
                short(&funcs[a].name)
            );
        }
        d.reachable(e, &mut reach);
    }
    let mut frames: Vec<u64> = reach.clone();
    frames.sort_by_key(|a| std::cmp::Reverse(funcs.get(a).map_or(0, |f| f.frame)));
    println!("largest frames reachable from the entries:");
    for a in frames.iter().take(15) {
        let Some(f) = funcs.get(a) else { continue };
        let over = f.frame > budget;
        ok &= !over;
        println!(
            "{} {:>7}  {}",
            if over { "OVER" } else { "    " },
            f.frame,
            short(&f.name)
        );
    }
    let indirect: Vec<&Func> = reach
        .iter()
        .filter_map(|a| funcs.get(a))
        .filter(|f| f.indirect > 0)
        .collect();
    println!(
        "{} reachable functions make indirect calls (not followed):",
        indirect.len()
    );
    for f in indirect.iter().take(10) {
        println!("      {}  {}", f.indirect, short(&f.name));
    }
    for a in &d.recursive {
        println!("recursion through {} (counted once)", short(&funcs[a].name));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("stack-check: over the budget of {budget} bytes");
        ExitCode::FAILURE
    }
}
