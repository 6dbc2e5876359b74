//! Parquet dataset files, as the Hugging Face Hub ships datasets (GSM8K's
//! `main/train-00000-of-00001.parquet`: string columns `question` and `answer`). Each row
//! becomes the JSON object a JSON reader would see (strings, numbers, booleans, nulls,
//! lists and structs as arrays and objects), so every reader, and every error naming a
//! field, works unchanged; a row is located by its number, counted from 0 as pandas and
//! `datasets` count.

use std::path::Path;

use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::records::{Location, Record};
use crate::{Error, Result};

/// Told by the `.parquet` extension or by the `PAR1` magic that starts every parquet file.
pub(super) fn is_parquet(path: &Path) -> bool {
    let by_name = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("parquet"));
    by_name || starts_with_magic(path)
}

fn starts_with_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"PAR1")
}

/// Every row of the file, in file order. A file or row that cannot be decoded is fatal:
/// past a broken page there is no row boundary to skip to.
pub(super) fn read_parquet_records(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let unreadable = |e: ParquetError| {
        Error::format(
            path,
            "(parquet)",
            format!("not a readable parquet file: {}", explain(&e)),
        )
    };
    let reader = SerializedFileReader::new(file).map_err(unreadable)?;
    let rows = reader.get_row_iter(None).map_err(unreadable)?;
    rows.enumerate()
        .map(|(index, row)| {
            let location = Location::Row(index);
            let row = row.map_err(|e| {
                Error::format(
                    location.in_file(path),
                    "(parquet)",
                    format!("cannot decode the row: {}", explain(&e)),
                )
            })?;
            Ok(Record {
                location,
                value: Ok(row.to_json_value()),
            })
        })
        .collect()
}

/// The parquet crate's message, with the way out when the codec is one scotd leaves out.
fn explain(error: &ParquetError) -> String {
    let message = error.to_string();
    if message.contains("Disabled feature at compile time") {
        format!(
            "{message} (scotd reads uncompressed and snappy-compressed parquet, pyarrow's \
             default: rewrite it with compression=\"snappy\", or convert it to JSONL)"
        )
    } else {
        message
    }
}
