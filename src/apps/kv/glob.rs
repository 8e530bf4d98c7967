//! Glob-style matching for KEYS and SCAN MATCH, as Redis's `stringmatchlen`
//! (src/util.c there): `*`, `?`, `[...]` with `^` and ranges, `\` escapes,
//! byte for byte, including its handling of malformed patterns (an
//! unclosed `[` matches what it has read so far). Past a `*` that found no
//! match for the rest, longer tries are skipped, so matching stays
//! polynomial.

/// Whether `string` matches `pattern`.
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, &mut skip_longer)
}

/// The pattern byte at `i`, or 0 past its end (the C original reads the
/// string's terminating NUL there).
fn at(pattern: &[u8], i: usize) -> u8 {
    pattern.get(i).copied().unwrap_or(0)
}

fn match_impl(pattern: &[u8], string: &[u8], skip_longer: &mut bool) -> bool {
    // `p` and `s` index into pattern and string; `plen`/`slen` are what is
    // left of each, as in the original.
    let (mut p, mut s) = (0usize, 0usize);
    let (mut plen, mut slen) = (pattern.len() as isize, string.len() as isize);
    while plen > 0 && slen > 0 {
        match at(pattern, p) {
            b'*' => {
                while plen > 0 && at(pattern, p + 1) == b'*' {
                    p += 1;
                    plen -= 1;
                }
                if plen == 1 {
                    return true;
                }
                return star(&pattern[p + 1..], &string[s..], skip_longer);
            }
            b'?' => {
                s += 1;
                slen -= 1;
            }
            b'[' => {
                if !class(pattern, (&mut p, &mut plen), string[s]) {
                    return false;
                }
                s += 1;
                slen -= 1;
            }
            first => {
                let mut literal = first;
                if first == b'\\' && plen >= 2 {
                    p += 1;
                    plen -= 1;
                    literal = at(pattern, p);
                }
                if literal != string[s] {
                    return false;
                }
                s += 1;
                slen -= 1;
            }
        }
        p += 1;
        plen -= 1;
        if slen == 0 {
            while at(pattern, p) == b'*' && p < pattern.len() {
                p += 1;
                plen -= 1;
            }
            break;
        }
    }
    plen == 0 && slen == 0
}

/// A `*` followed by `rest` (not empty), against a non-empty `string`:
/// `rest` is tried at every position. Once a try has failed with the rest
/// of the string in reach (`skip_longer`), later positions cannot match
/// either, which keeps nested stars polynomial.
fn star(rest: &[u8], string: &[u8], skip_longer: &mut bool) -> bool {
    for s in 0..string.len() {
        if match_impl(rest, &string[s..], skip_longer) {
            return true;
        }
        if *skip_longer {
            return false;
        }
    }
    *skip_longer = true;
    false
}

/// Whether byte `c` is in the class that starts at the `[` at `p`; leaves
/// `p` (and `plen`, what is left of the pattern) on its closing `]`, or on
/// the last byte of an unclosed class.
fn class(pattern: &[u8], (p, plen): (&mut usize, &mut isize), c: u8) -> bool {
    *p += 1;
    *plen -= 1;
    let not = at(pattern, *p) == b'^';
    if not {
        *p += 1;
        *plen -= 1;
    }
    let mut matched = false;
    loop {
        if at(pattern, *p) == b'\\' && *plen >= 2 {
            *p += 1;
            *plen -= 1;
            if at(pattern, *p) == c {
                matched = true;
            }
        } else if at(pattern, *p) == b']' {
            break;
        } else if *plen == 0 {
            *p -= 1;
            *plen += 1;
            break;
        } else if *plen >= 3 && at(pattern, *p + 1) == b'-' {
            // Signed, as C's `char` is on the platforms Redis runs on:
            // bytes past 127 sort below the rest.
            let (mut start, mut end) = (at(pattern, *p) as i8, at(pattern, *p + 2) as i8);
            if start > end {
                std::mem::swap(&mut start, &mut end);
            }
            *p += 2;
            *plen -= 2;
            if (start..=end).contains(&(c as i8)) {
                matched = true;
            }
        } else if at(pattern, *p) == c {
            matched = true;
        }
        *p += 1;
        *plen -= 1;
    }
    matched != not
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_redis_does() {
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h*llo", b"heeeello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"h[b-a]llo", b"hallo"));
        assert!(matches(b"h\\*llo", b"h*llo"));
        assert!(!matches(b"h\\*llo", b"hello"));
        assert!(matches(b"a*", b"a"));
        assert!(!matches(b"a?", b"a"));
        assert!(!matches(b"", b"a"));
        assert!(matches(b"", b""));
        // An unclosed class matches what it read.
        assert!(matches(b"a[b", b"ab"));
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*b", &[b'a'; 60]));
    }
}
