//! INCRBYFLOAT's arithmetic, bit for bit as Redis does it on x86-64: its
//! operands are parsed with `strtold` into an 80-bit `long double` (64-bit
//! mantissa), added in that precision, and printed with `%.17Lf`, trailing
//! zeros cut (src/util.c there: `string2ld`, `ld2string`). Rust has no
//! such type, so the values are computed exactly with a small big integer
//! and rounded as the hardware and glibc round (to nearest, ties to even).

use std::cmp::Ordering;

/// Why INCRBYFLOAT failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrFloatError {
    /// The value or the increment is not a number `strtold` takes whole.
    NotFloat,
    /// The sum is infinite (or NaN).
    NanOrInfinity,
    /// The reply would not fit the connection's reply window.
    TooLarge,
    /// The new value would pass `max_memory`.
    Oom,
}

/// Redis's `MAX_LONG_DOUBLE_CHARS`: longer inputs are not numbers.
const MAX_CHARS: usize = 5 * 1024;

/// The mantissa exponent bounds of an 80-bit long double: a value is
/// `m × 2^e` with `m < 2^64`, normal when `m ≥ 2^63`.
const EXP_MIN: i64 = -16445;
const EXP_MAX: i64 = 16320;

/// A long double: `±m × 2^e`, or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ld {
    Finite { negative: bool, m: u64, e: i64 },
    Infinite { negative: bool },
}

/// The text INCRBYFLOAT stores and answers for `current` (absent: 0) plus
/// `increment`.
pub fn incr_text(current: Option<&[u8]>, increment: &[u8]) -> Result<Vec<u8>, IncrFloatError> {
    let value = match current {
        Some(text) => parse(text).ok_or(IncrFloatError::NotFloat)?,
        None => Ld::Finite {
            negative: false,
            m: 0,
            e: 0,
        },
    };
    let increment = parse(increment).ok_or(IncrFloatError::NotFloat)?;
    match add(value, increment) {
        Some(Ld::Finite { negative, m, e }) => Ok(human(negative, m, e)),
        _ => Err(IncrFloatError::NanOrInfinity),
    }
}

/// Redis's `string2ld`: the whole text must be one `strtold` number (no
/// leading space, no NaN, no overflow, no nonzero value that rounds to 0).
fn parse(text: &[u8]) -> Option<Ld> {
    if text.is_empty() || text.len() >= MAX_CHARS || is_c_space(text[0]) {
        return None;
    }
    let (negative, rest) = match text[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(Ld::Infinite { negative });
    }
    let (num, den, nonzero) = if rest.len() > 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' {
        parse_hex(&rest[2..])?
    } else {
        parse_decimal(rest)?
    };
    match round(negative, num, den) {
        Ld::Finite { m: 0, .. } if nonzero => None, // underflow: ERANGE
        Ld::Infinite { .. } => None,                // overflow: ERANGE
        value => Some(value),
    }
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Digits, an optional point, an optional exponent: (numerator,
/// denominator, whether any digit is nonzero).
fn parse_decimal(text: &[u8]) -> Option<(Big, Big, bool)> {
    let mut digits = Vec::new();
    let mut scale: i64 = 0;
    let mut at = 0;
    let mut seen_point = false;
    let mut any = false;
    while at < text.len() {
        match text[at] {
            d @ b'0'..=b'9' => {
                any = true;
                if !(digits.is_empty() && d == b'0') {
                    digits.push(d - b'0');
                }
                if seen_point {
                    scale -= 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        at += 1;
    }
    if !any {
        return None;
    }
    if at < text.len() {
        if text[at] | 0x20 != b'e' {
            return None;
        }
        scale = scale.saturating_add(parse_exponent(&text[at + 1..])?);
    }
    if digits.is_empty() {
        return Some((Big::zero(), Big::one(), false));
    }
    // Far past the range either way: no need for the exact value.
    let magnitude = digits.len() as i64 + scale;
    if magnitude > 4940 {
        return Some((Big::one().shl(20_000), Big::one(), true));
    }
    if magnitude < -4960 {
        return Some((Big::one(), Big::one().shl(20_000), true));
    }
    let mut num = Big::zero();
    for d in digits {
        num.mul_add_small(10, u32::from(d));
    }
    let mut den = Big::one();
    if scale >= 0 {
        num.mul_pow10(scale as u32);
    } else {
        den.mul_pow10((-scale) as u32);
    }
    Some((num, den, true))
}

/// `0x` already taken: hex digits, an optional point, an optional binary
/// exponent (`p`, decimal).
fn parse_hex(text: &[u8]) -> Option<(Big, Big, bool)> {
    let mut num = Big::zero();
    let mut shift: i64 = 0;
    let mut at = 0;
    let mut seen_point = false;
    let mut any = false;
    let mut nonzero = false;
    while at < text.len() {
        let c = text[at];
        match (c as char).to_digit(16) {
            Some(d) => {
                any = true;
                nonzero |= d != 0;
                if num.bits() < 20_000 {
                    num.mul_add_small(16, d);
                    if seen_point {
                        shift -= 4;
                    }
                } else if !seen_point {
                    shift += 4;
                }
            }
            None if c == b'.' && !seen_point => seen_point = true,
            None => break,
        }
        at += 1;
    }
    if !any {
        return None;
    }
    if at < text.len() {
        if text[at] | 0x20 != b'p' {
            return None;
        }
        shift = shift.saturating_add(parse_exponent(&text[at + 1..])?);
    }
    let shift = shift.clamp(-40_000, 40_000);
    if shift >= 0 {
        Some((num.shl(shift as usize), Big::one(), nonzero))
    } else {
        Some((num, Big::one().shl((-shift) as usize), nonzero))
    }
}

/// An exponent's optional sign and digits, the whole rest of the text.
fn parse_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    Some(if negative { -value } else { value })
}

/// `num / den` rounded to the nearest long double (ties to even),
/// subnormals and overflow included.
fn round(negative: bool, num: Big, den: Big) -> Ld {
    if num.is_zero() {
        return Ld::Finite {
            negative,
            m: 0,
            e: 0,
        };
    }
    // Scale so the quotient has 66 or 67 bits: 64 kept, the rest rounded.
    let s = 66 - (num.bits() as i64 - den.bits() as i64);
    let (num, den) = if s >= 0 {
        (num.shl(s as usize), den)
    } else {
        (num, den.shl((-s) as usize))
    };
    let (q, exact) = num.div_small_quotient(&den);
    let qbits = 128 - q.leading_zeros() as i64;
    let mut drop = qbits - 64;
    let mut e = drop - s;
    if e < EXP_MIN {
        drop += EXP_MIN - e;
        e = EXP_MIN;
    }
    let mut m = if drop >= 128 { 0 } else { q >> drop };
    if drop > 0 {
        let rest = if drop >= 128 {
            q
        } else {
            q & ((1u128 << drop) - 1)
        };
        let half = if drop > 128 { 0 } else { 1u128 << (drop - 1) };
        let up = match rest.cmp(&half) {
            Ordering::Greater => drop <= 128,
            Ordering::Equal => !exact || m & 1 == 1,
            Ordering::Less => false,
        };
        if up {
            m += 1;
        }
    }
    if m == 1u128 << 64 {
        m >>= 1;
        e += 1;
    }
    if e > EXP_MAX {
        return Ld::Infinite { negative };
    }
    Ld::Finite {
        negative,
        m: m as u64,
        e,
    }
}

/// The long double sum of `a` and `b`, `None` for NaN.
fn add(a: Ld, b: Ld) -> Option<Ld> {
    match (a, b) {
        (Ld::Infinite { negative: x }, Ld::Infinite { negative: y }) if x != y => None,
        (Ld::Infinite { .. }, _) => Some(a),
        (_, Ld::Infinite { .. }) => Some(b),
        (
            Ld::Finite {
                negative: na,
                m: ma,
                e: ea,
            },
            Ld::Finite {
                negative: nb,
                m: mb,
                e: eb,
            },
        ) => {
            let low = ea.min(eb);
            let x = Big::from_u64(ma).shl((ea - low) as usize);
            let y = Big::from_u64(mb).shl((eb - low) as usize);
            let (negative, sum) = if na == nb {
                (na, x.add(&y))
            } else {
                match x.cmp(&y) {
                    Ordering::Less => (nb, y.sub(&x)),
                    _ => (na, x.sub(&y)),
                }
            };
            let (num, den) = if low >= 0 {
                (sum.shl(low as usize), Big::one())
            } else {
                (sum, Big::one().shl((-low) as usize))
            };
            Some(round(negative, num, den))
        }
    }
}

/// `%.17Lf` of `±m × 2^e` with trailing zeros (and a bare point) cut, and
/// `-0` written `0`, as Redis's `ld2string` in its human mode.
fn human(negative: bool, m: u64, e: i64) -> Vec<u8> {
    let mut scaled = Big::from_u64(m);
    scaled.mul_pow10(17);
    let fixed = if e >= 0 {
        scaled.shl(e as usize)
    } else {
        let drop = (-e) as usize;
        let up = scaled.bit(drop - 1) && (scaled.any_below(drop - 1) || scaled.bit(drop));
        let mut q = scaled.shr(drop);
        if up {
            q = q.add(&Big::one());
        }
        q
    };
    let mut digits = fixed.to_decimal();
    if digits.len() < 18 {
        let mut padded = vec![b'0'; 18 - digits.len()];
        padded.extend_from_slice(&digits);
        digits = padded;
    }
    let point = digits.len() - 17;
    let mut text = Vec::with_capacity(digits.len() + 2);
    if negative {
        text.push(b'-');
    }
    text.extend_from_slice(&digits[..point]);
    text.push(b'.');
    text.extend_from_slice(&digits[point..]);
    while text.last() == Some(&b'0') {
        text.pop();
    }
    if text.last() == Some(&b'.') {
        text.pop();
    }
    if text == b"-0" {
        text = b"0".to_vec();
    }
    text
}

/// An unsigned big integer, 32-bit limbs, least significant first, no
/// high zero limbs. Just what the conversions above need.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn zero() -> Big {
        Big(Vec::new())
    }

    fn one() -> Big {
        Big(vec![1])
    }

    fn from_u64(value: u64) -> Big {
        let mut big = Big(vec![value as u32, (value >> 32) as u32]);
        big.trim();
        big
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bits(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(&top) => self.0.len() as u64 * 32 - u64::from(top.leading_zeros()),
        }
    }

    fn bit(&self, i: usize) -> bool {
        self.0
            .get(i / 32)
            .is_some_and(|limb| limb >> (i % 32) & 1 == 1)
    }

    /// Whether any bit below `i` is set.
    fn any_below(&self, i: usize) -> bool {
        let (limbs, bits) = (i / 32, i % 32);
        self.0.iter().take(limbs).any(|&l| l != 0)
            || (bits > 0
                && self
                    .0
                    .get(limbs)
                    .is_some_and(|l| l & ((1 << bits) - 1) != 0))
    }

    fn mul_add_small(&mut self, factor: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(factor) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    fn mul_pow10(&mut self, mut n: u32) {
        while n >= 9 {
            self.mul_add_small(1_000_000_000, 0);
            n -= 9;
        }
        if n > 0 {
            self.mul_add_small(10u32.pow(n), 0);
        }
    }

    fn shl(&self, n: usize) -> Big {
        if self.is_zero() {
            return Big::zero();
        }
        let (limbs, bits) = (n / 32, n % 32);
        let mut out = vec![0u32; limbs];
        let mut carry = 0u32;
        for &limb in &self.0 {
            if bits == 0 {
                out.push(limb);
            } else {
                out.push(limb << bits | carry);
                carry = limb >> (32 - bits);
            }
        }
        if carry > 0 {
            out.push(carry);
        }
        let mut big = Big(out);
        big.trim();
        big
    }

    fn shr(&self, n: usize) -> Big {
        let (limbs, bits) = (n / 32, n % 32);
        if limbs >= self.0.len() {
            return Big::zero();
        }
        let src = &self.0[limbs..];
        let mut out = Vec::with_capacity(src.len());
        for i in 0..src.len() {
            let low = src[i] >> bits;
            let high = if bits == 0 {
                0
            } else {
                src.get(i + 1).map_or(0, |&h| h << (32 - bits))
            };
            out.push(low | high);
        }
        let mut big = Big(out);
        big.trim();
        big
    }

    fn add(&self, other: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()) + 1);
        let mut carry = 0u64;
        for i in 0..self.0.len().max(other.0.len()) {
            let v = u64::from(*self.0.get(i).unwrap_or(&0))
                + u64::from(*other.0.get(i).unwrap_or(&0))
                + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        let mut big = Big(out);
        big.trim();
        big
    }

    /// `self - other`, for `self >= other`.
    fn sub(&self, other: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v = i64::from(self.0[i]) - i64::from(*other.0.get(i).unwrap_or(&0)) - borrow;
            borrow = i64::from(v < 0);
            if v < 0 {
                v += 1 << 32;
            }
            out.push(v as u32);
        }
        let mut big = Big(out);
        big.trim();
        big
    }

    /// `self / den` for a quotient under 2^127 (the callers scale it to 67
    /// bits), and whether the division was exact. Binary long division.
    fn div_small_quotient(&self, den: &Big) -> (u128, bool) {
        let top = self.bits().saturating_sub(den.bits()) as usize;
        debug_assert!(top < 127);
        let mut rest = self.clone();
        let mut q = 0u128;
        let mut step = den.shl(top);
        for i in (0..=top).rev() {
            if rest.cmp(&step) != Ordering::Less {
                rest = rest.sub(&step);
                q |= 1 << i;
            }
            step = step.shr(1);
        }
        (q, rest.is_zero())
    }

    /// Decimal digits (ASCII), "0" for zero.
    fn to_decimal(&self) -> Vec<u8> {
        let mut limbs = self.0.clone();
        let mut chunks = Vec::new();
        while !limbs.is_empty() {
            let mut rem = 0u64;
            for limb in limbs.iter_mut().rev() {
                let v = rem << 32 | u64::from(*limb);
                *limb = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
            chunks.push(rem as u32);
        }
        let mut text = match chunks.pop() {
            None => return b"0".to_vec(),
            Some(top) => top.to_string().into_bytes(),
        };
        for chunk in chunks.iter().rev() {
            text.extend_from_slice(format!("{chunk:09}").as_bytes());
        }
        text
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, other: &Big) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Big {
    fn cmp(&self, other: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(current: Option<&str>, by: &str) -> Result<String, IncrFloatError> {
        incr_text(current.map(str::as_bytes), by.as_bytes()).map(|t| String::from_utf8(t).unwrap())
    }

    #[test]
    fn sums_print_as_redis_prints_them() {
        // The values Redis's documentation shows, and long double's extra
        // precision (0.1 + 0.2 is exactly 0.3 at 17 decimals).
        assert_eq!(incr(Some("10.50"), "0.1").unwrap(), "10.6");
        assert_eq!(incr(Some("0.1"), "0.2").unwrap(), "0.3");
        assert_eq!(incr(Some("5.0e3"), "2.0e2").unwrap(), "5200");
        assert_eq!(incr(None, "3").unwrap(), "3");
        assert_eq!(incr(Some("1"), "-1").unwrap(), "0");
        assert_eq!(incr(Some("-1e-30"), "0").unwrap(), "0");
        assert_eq!(incr(Some("0x10"), "0x1p-1").unwrap(), "16.5");
        // Past 64 bits of mantissa the sum rounds; printing is exact binary.
        assert_eq!(incr(Some("1e20"), "1").unwrap(), "100000000000000000000");
        assert_eq!(incr(Some("3.0000000000000000001"), "0").unwrap(), "3");
        assert_eq!(
            incr(Some("1e30"), "0").unwrap(),
            "1000000000000000000024696061952"
        );
        assert_eq!(
            incr(Some("123456789.123456789"), "0.000000001").unwrap(),
            "123456789.12345678999554366"
        );
        assert_eq!(incr(Some("1e-4950"), "0").unwrap(), "0");
    }

    #[test]
    fn what_strtold_refuses_is_not_a_float() {
        for bad in [
            "", " 1", "1 ", "abc", "1e", "0x", "nan", "1e99999", "1e-99999", "--1", "1.2.3",
        ] {
            assert_eq!(
                incr(Some(bad), "1"),
                Err(IncrFloatError::NotFloat),
                "{bad:?}"
            );
        }
        assert_eq!(incr(Some("inf"), "1"), Err(IncrFloatError::NanOrInfinity));
        assert_eq!(incr(Some("0e-99999"), "1").unwrap(), "1");
        assert_eq!(
            incr(Some("1.18e4932"), "1.18e4932"),
            Err(IncrFloatError::NanOrInfinity)
        );
    }
}
