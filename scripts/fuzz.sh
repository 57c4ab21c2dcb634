#!/usr/bin/env bash
# Fuzzes the event decoder with libFuzzer (swiftc -sanitize=fuzzer,address) for a bounded time.
#   scripts/fuzz.sh [SECONDS]     (default 60)
# The decoder's sources are compiled together with the entry point in Fuzz/; the corpus starts
# from valid and invalid events and is kept in .test-artifacts/fuzz-corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.test-artifacts/fuzz
mkdir -p "$out" .test-artifacts/fuzz-corpus
# One module: the decoder's `import CTRWindows` is dropped because CTRWindows is compiled in.
mkdir -p "$out/src"
for file in Sources/Ingest/EventDecoder.swift Sources/Ingest/ISO8601Timestamp.swift; do
    grep -v '^import CTRWindows$' "$file" >"$out/src/$(basename "$file")"
done
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name DecoderFuzz \
    Fuzz/EventDecoderFuzzer.swift "$out"/src/*.swift Sources/CTRWindows/*.swift -o "$out/event-decoder-fuzzer"
corpus=.test-artifacts/fuzz-corpus
printf '%s' '{"product_id":"p-1","timestamp":1700000000000,"event_type":"impression"}' >"$corpus/valid"
printf '%s' '{"product_id":"a\"\\u00e9","timestamp":"2023-11-14T22:13:20.5+01:00","x":[1,{"y":null},true,-1.5e3]}' >"$corpus/escaped"
printf '%s' '[1,2,3]' >"$corpus/array"
"$out/event-decoder-fuzzer" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
