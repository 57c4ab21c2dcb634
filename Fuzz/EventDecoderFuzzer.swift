// libFuzzer entry point for the event decoder; built and run by scripts/fuzz.sh.
// Every input must either decode to an event with a non-empty product id or be rejected with a
// reason and a detail; anything else (a crash, a trap, a sanitizer report) is a finding.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    for kind in [EventKind.impression, .click] {
        switch EventDecoder(maximumMessageBytes: 4096, maximumDepth: 8).decode(bytes, expecting: kind) {
        case .success(let event):
            precondition(!event.productID.isEmpty && event.productID.utf8.count <= EventDecoder.maximumProductIDBytes)
        case .failure(let rejection):
            precondition(!rejection.detail.isEmpty)
        }
    }
    return 0
}
