//! Integration tests over the real binary and the real kernel, as root, inside network
//! namespaces each test creates and removes: the plugin always runs in a test "host" namespace
//! (never the machine's), and every container namespace is the test's own.

mod chain;
mod concurrency;
mod crash;
mod errors;
mod netns;
mod roundtrip;
mod traffic;
