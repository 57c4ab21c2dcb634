#!/usr/bin/env bash
# Fuzzes the event decoder with libFuzzer (swiftc -sanitize=fuzzer,address) for a bounded time.
#   scripts/fuzz.sh [SECONDS]     (default 60)
# The EventDecoding and CTRWindows targets are compiled as their own modules, exactly as
# SwiftPM builds them (no source rewriting), and linked with the entry point in Fuzz/; the
# corpus starts from valid and invalid events and is kept in .test-artifacts/fuzz-corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.test-artifacts/fuzz
mkdir -p "$out/modules" .test-artifacts/fuzz-corpus
flags=(-sanitize=fuzzer,address -O -parse-as-library)
# Each library module is compiled to an object file and its interface; -sanitize=fuzzer on a
# library adds coverage instrumentation without a second main.
swiftc "${flags[@]}" -emit-module -emit-object -module-name CTRWindows -I "$out/modules" \
    -emit-module-path "$out/modules/CTRWindows.swiftmodule" -wmo -o "$out/CTRWindows.o" Sources/CTRWindows/*.swift
swiftc "${flags[@]}" -emit-module -emit-object -module-name EventDecoding -I "$out/modules" \
    -emit-module-path "$out/modules/EventDecoding.swiftmodule" -wmo -o "$out/EventDecoding.o" Sources/EventDecoding/*.swift
swiftc "${flags[@]}" -module-name DecoderFuzz -I "$out/modules" \
    Fuzz/EventDecoderFuzzer.swift "$out/EventDecoding.o" "$out/CTRWindows.o" -o "$out/event-decoder-fuzzer"
corpus=.test-artifacts/fuzz-corpus
printf '%s' '{"product_id":"p-1","timestamp":1700000000000,"event_type":"impression"}' >"$corpus/valid"
printf '%s' '{"product_id":"a\"\\u00e9","timestamp":"2023-11-14T22:13:20.5+01:00","x":[1,{"y":null},true,-1.5e3]}' >"$corpus/escaped"
printf '%s' '{"product_id":"p","timestamp":1700000000000,"revenue":999999.999999,"click":true}' >"$corpus/revenue"
printf '%s' '[1,2,3]' >"$corpus/array"
"$out/event-decoder-fuzzer" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
