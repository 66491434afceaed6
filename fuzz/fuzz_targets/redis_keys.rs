//! The Redis command table on random argument lists: lookup, arity, key positions, and the
//! slot rules a cluster applies (common slot, the per-slot split of MSET/DEL/...).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pake::redis::commands::{slot, Keys, Table};
use pake::redis::session::dispatch::{common_slot, keys_of};

fuzz_target!(|data: &[u8]| {
    let (sel, data) = pake_fuzz::split_first(data);
    let table = Table::get();
    // arguments separated by 0x00; the first is the name, or a table entry chosen by `sel`
    let mut args: Vec<Bytes> = data
        .split(|&b| b == 0)
        .map(Bytes::copy_from_slice)
        .collect();
    let specs = table.specs();
    if sel & 0x80 == 0 && !specs.is_empty() {
        let name = specs[sel as usize % specs.len()].name;
        match args.first_mut() {
            Some(first) if first.is_empty() => *first = Bytes::from_static(name.as_bytes()),
            _ => args.insert(0, Bytes::from_static(name.as_bytes())),
        }
    }
    let Some(spec) = args.first().and_then(|n| table.lookup(n)) else {
        return;
    };
    let positions = spec.key_positions(&args);
    let step = match spec.keys {
        Keys::Range { step, .. } => usize::from(step.max(1)),
        _ => 1,
    };
    for w in positions.windows(2) {
        assert!(
            w[0] < w[1],
            "{}: key positions out of order: {positions:?}",
            spec.name
        );
    }
    for &p in &positions {
        assert!(p >= 1, "{}: the command name taken as a key", spec.name);
        // a cluster split sends args[p..p + step] to the key's node
        assert!(
            p + step <= args.len(),
            "{}: key at {p} lacks its {step}-argument group in {} arguments",
            spec.name,
            args.len()
        );
    }
    if !spec.arity_ok(args.len()) {
        return;
    }
    let keys = keys_of(spec, &args);
    assert_eq!(keys.len(), positions.len());
    match common_slot(&keys) {
        Ok(Some(s)) => assert!(keys.iter().all(|k| slot(k) == s)),
        Ok(None) => assert!(keys.is_empty()),
        Err(_) => assert!(keys.iter().any(|k| slot(k) != slot(keys[0]))),
    }
});
