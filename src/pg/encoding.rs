//! Client encoding names as PostgreSQL reports them. A client may ask for `utf-8`,
//! `'unicode'` or `latin9` in its startup packet; the server accepts any spelling (case and
//! punctuation ignored) and reports the canonical name (`UTF8`, `LATIN9`) in ParameterStatus.
//! Pake answers the login itself, so it reports the same canonical name.

/// PostgreSQL's encoding names usable by a client (`pg_enc2name_tbl`, client side).
const CANONICAL: &[&str] = &[
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "UTF8",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
    "SJIS",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
    "SHIFT_JIS_2004",
];

/// Other spellings PostgreSQL accepts (`pg_encname_tbl`), already without punctuation.
const ALIASES: &[(&str, &str)] = &[
    ("unicode", "UTF8"),
    ("iso88591", "LATIN1"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88599", "LATIN5"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("shiftjis", "SJIS"),
    ("mskanji", "SJIS"),
    ("win", "WIN1251"),
    ("alt", "WIN866"),
    ("koi8", "KOI8R"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("abc", "WIN1258"),
    ("windows1252", "WIN1252"),
    ("cp1252", "WIN1252"),
];

/// Letters and digits, lower case: how PostgreSQL compares encoding names.
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The name the server reports for a client encoding, if it is one.
pub fn canonical(name: &str) -> Option<&'static str> {
    let key = squash(name);
    CANONICAL
        .iter()
        .copied()
        .find(|c| squash(c) == key)
        .or_else(|| ALIASES.iter().find(|(a, _)| *a == key).map(|(_, c)| *c))
}

/// A startup parameter's value as the server would report it.
pub fn reported<'a>(name: &str, value: &'a str) -> &'a str {
    match name {
        "client_encoding" => canonical(value).unwrap_or(value),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_map_to_the_servers_names() {
        assert_eq!(canonical("utf-8"), Some("UTF8"));
        assert_eq!(canonical("'utf-8'"), Some("UTF8"));
        assert_eq!(canonical("Unicode"), Some("UTF8"));
        assert_eq!(canonical("latin9"), Some("LATIN9"));
        assert_eq!(canonical("ISO-8859-15"), Some("LATIN9"));
        assert_eq!(canonical("iso_8859_5"), Some("ISO_8859_5"));
        assert_eq!(canonical("shift_jis_2004"), Some("SHIFT_JIS_2004"));
        assert_eq!(canonical("klingon"), None);
        assert_eq!(reported("client_encoding", "utf8"), "UTF8");
        assert_eq!(reported("application_name", "utf8"), "utf8");
    }
}
