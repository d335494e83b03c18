use super::*;

fn settings(dir: &Path) -> QueueSettings {
    QueueSettings {
        dir: dir.to_owned(),
        max_disk_bytes: 1 << 20,
        segment_bytes: 4096,
        fsync: Fsync::Interval,
        fsync_interval: Duration::from_millis(100),
    }
}

/// A batch of `n` entries `tag-0` … under key `K`.
fn batch(tag: &str, n: usize) -> RedisBatch {
    let mut batch = RedisBatch::default();
    for i in 0..n {
        let key = batch.data.len()..batch.data.len() + 1;
        batch.data.push(b'K');
        let start = batch.data.len();
        batch
            .data
            .extend_from_slice(format!("{tag}-{i}\n").as_bytes());
        batch.ops.push(RedisOp {
            key,
            entry: start..batch.data.len(),
            publish: None,
            list_cap: 10,
        });
    }
    batch
}

fn entries(taken: &Taken) -> Vec<String> {
    taken
        .batches
        .iter()
        .flat_map(|b| {
            b.ops.iter().map(|op| {
                String::from_utf8_lossy(b.slice(&op.entry))
                    .trim()
                    .to_owned()
            })
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    found.sort();
    found
}

#[test]
fn what_was_appended_and_not_applied_is_replayed_after_a_crash_in_order_with_its_chunk_ids() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    let id = queue.writer_id().to_owned();
    queue
        .append(&batch("a", 2), &[b"chunk-a".to_vec()])
        .unwrap();
    queue.append(&batch("b", 3), &[]).unwrap();
    let taken = queue.take(100, 1 << 20).unwrap();
    assert_eq!(taken.first_seq, Some(1));
    assert_eq!(entries(&taken), ["a-0", "a-1", "b-0", "b-1", "b-2"]);
    queue.applied(2);
    queue.append(&batch("c", 1), &[]).unwrap();
    // The process dies here: nothing closed, nothing synced on purpose.
    drop(queue);

    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    assert_eq!(queue.writer_id(), id, "the identity outlives the process");
    assert_eq!(queue.applied_floor(), 2);
    assert_eq!(queue.replayed(), 4);
    assert_eq!(queue.next_seq_at_open(), 7);
    let taken = queue.take(100, 1 << 20).unwrap();
    assert_eq!(
        taken.first_seq,
        Some(3),
        "the applied record is passed over"
    );
    assert_eq!(entries(&taken), ["b-0", "b-1", "b-2", "c-0"]);
    assert!(queue.take(100, 1 << 20).is_none());
    // Chunk ids of what was on disk are known again.
    assert_eq!(queue.chunks_at_start(), [b"chunk-a".to_vec()]);
    // Numbering goes on where it stopped.
    queue.append(&batch("d", 1), &[]).unwrap();
    assert_eq!(queue.take(100, 1 << 20).unwrap().first_seq, Some(7));
}

#[test]
fn a_torn_tail_is_cut_and_the_records_before_it_survive() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    queue.append(&batch("a", 2), &[]).unwrap();
    drop(queue);
    let path = segments(dir.path()).pop().unwrap();
    let whole = std::fs::metadata(&path).unwrap().len();
    // Half a record, as a crash mid-write leaves it.
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&[60, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(file);

    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    assert_eq!(entries(&queue.take(100, 1 << 20).unwrap()), ["a-0", "a-1"]);
    queue.append(&batch("b", 1), &[]).unwrap();
    assert_eq!(entries(&queue.take(100, 1 << 20).unwrap()), ["b-0"]);
}

#[test]
fn a_corrupt_record_is_skipped_and_the_next_one_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    queue.append(&batch("a", 2), &[]).unwrap();
    queue.append(&batch("b", 2), &[]).unwrap();
    drop(queue);
    let path = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte of the first record's data flipped.
    bytes[HEADER_LEN + 60] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    assert_eq!(queue.replayed(), 2);
    let taken = queue.take(100, 1 << 20).unwrap();
    assert_eq!(taken.first_seq, Some(3));
    assert_eq!(entries(&taken), ["b-0", "b-1"]);
}

#[test]
fn a_segment_from_a_newer_format_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(&settings(dir.path())).unwrap();
    queue.append(&batch("a", 1), &[]).unwrap();
    drop(queue);
    let path = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let error = DiskQueue::open(&settings(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("format version 9 is newer"), "{error}");
    // Left as it was, for the cowlogd that wrote it.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_second_opener_of_the_directory_is_told_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _held = DiskQueue::open(&settings(dir.path())).unwrap();
    let error = DiskQueue::open(&settings(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_refuses_new_batches_without_evicting_and_room_returns_once_applied() {
    let dir = tempfile::tempdir().unwrap();
    let queue = DiskQueue::open(&QueueSettings {
        max_disk_bytes: 8192,
        segment_bytes: 2048,
        ..settings(dir.path())
    })
    .unwrap();
    let mut appended = 0;
    while queue.append(&batch("x", 10), &[]).is_ok() {
        appended += 1;
    }
    assert!(appended >= 3, "{appended}");
    assert_eq!(queue.append(&batch("y", 1), &[]), Err(Refused::Full));
    assert!(segments(dir.path()).len() >= 3);
    // Everything on disk is still there, in order.
    let taken = queue.take(usize::MAX, usize::MAX).unwrap();
    assert_eq!(entries(&taken).len(), appended * 10);
    assert_eq!(entries(&taken)[0], "x-0");
    // Applied: the closed segments go after the grace, the newest stays.
    queue.applied(taken.first_seq.unwrap() + appended as u64 * 10 - 1);
    assert_eq!(queue.append(&batch("y", 1), &[]), Err(Refused::Full));
    tokio::time::advance(DELETE_GRACE).await;
    queue.collect(&mut lock(&queue.append));
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(queue.append(&batch("y", 1), &[]), Ok(()));
    // A waiting acked append gets in once room is made.
    let cancel = CancellationToken::new();
    assert!(queue.append_when_room(&batch("z", 1), &[], &cancel).await);
}
