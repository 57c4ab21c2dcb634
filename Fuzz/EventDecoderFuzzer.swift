// libFuzzer entry point for the event decoder; built and run by scripts/fuzz.sh, which links the
// EventDecoding and CTRWindows modules.
// Every input must either decode to an event that satisfies the contract or be rejected with a
// reason and a one-line detail; anything else (a crash, a trap, a sanitizer report) is a finding.

import CTRWindows
import EventDecoding

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEventDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let decoder = EventDecoder(maximumMessageBytes: 4096, maximumDepth: 8)
    let now = Timestamp(milliseconds: 1_700_000_000_000)
    let shapes: [EventShape] = [.kind(.impression), .kind(.click), .impressionWithClickFlag(clickField: "click")]
    for shape in shapes {
        switch decoder.decode(bytes, shape: shape, now: now) {
        case .success(let event):
            precondition(!event.product.name.utf8.isEmpty && event.product.name.utf8.count <= EventDecoder.maximumProductIDBytes)
            precondition(event.revenueMicros <= EventDecoder.maximumRevenueMicros)
            precondition(decoder.timestampRange.contains(event.timestamp.milliseconds))
            precondition(event.timestamp.milliseconds - now.milliseconds <= decoder.maximumFuture.value)
        case .failure(let rejection):
            precondition(!rejection.detail.isEmpty && !rejection.detail.contains("\n"))
        }
    }
    return 0
}
