//! A hostile camera and hostile viewers against a shared route's camera session and fan-out
//! planner: any bytes, any receive splits, zero-length and oversized frames on any channel,
//! viewers on any channels that never read. The harness (`proto::shared_route::harness`, also
//! run by a property test) asserts no panic, only whole frames on a viewer's own channels, and
//! queues and GOP cache within their bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::shared_route::harness;

fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
