//! Regression tests, one per bug found, each named after the bug it pins
//! down (`fn line_reply_lost_when_ring_wraps()`, say) with a comment giving
//! the reproduction and the fix. Empty until the first bug.
