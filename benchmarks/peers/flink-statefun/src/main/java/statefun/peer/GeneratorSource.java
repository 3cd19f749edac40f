package statefun.peer;

import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.Collections;
import java.util.concurrent.locks.LockSupport;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.functions.source.RichParallelSourceFunction;

/**
 * The bounded parallel source behind the generator ingress, the same sequence as statefun-rs'
 * generator: subtask {@code w} of {@code p} emits sequences {@code w, w+p, w+2p, ...} below
 * {@code records}; sequence {@code s} has key {@code Long.toString(s % keys)} and a fresh copy of
 * a fixed {@code valueSize}-byte payload.
 *
 * <p>Like a well-behaved Flink source it emits under the checkpoint lock (in small batches, so the
 * lock is not taken per record) and checkpoints its position, as statefun-rs' generator does.
 *
 * <p>With a {@code rate} (records per second over all subtasks) a subtask emits record {@code n}
 * of its own at {@code n * p / rate} seconds after its start, catching up after a stall, as
 * statefun-rs' generator paces. With {@code stamp} the first 16 characters of each value's text
 * are the record's due time in microseconds since the Unix epoch (its scheduled time when paced,
 * the time of its batch otherwise): statefun-rs' {@code stamp: true}, so that the function
 * server can measure the same end-to-end latency for both runtimes.
 */
public final class GeneratorSource extends RichParallelSourceFunction<Record>
    implements CheckpointedFunction, CheckpointListener {

  private static final long serialVersionUID = 1L;

  /** Records emitted per hold of the checkpoint lock. */
  private static final int BATCH = 256;

  private final long records;
  private final long keys;
  /** The payload every record carries a fresh copy of. */
  private final byte[] value;
  /**
   * Whether {@link #run} stays (idle) after the last record until cancelled, like an unbounded
   * source (Kafka). The remote peer needs it: when a bounded source returns, the job finishes and
   * StateFun closes its HTTP client under the remote requests still in flight, losing them.
   */
  private final boolean holdOpen;
  /** Records per second over all subtasks; 0 = as fast as possible. */
  private final double rate;
  /** Where the stamp's digits start in {@link #value} (after a StringWrapper's header); -1 = none. */
  private final int stampAt;

  /** The digits a stamp takes. */
  static final int STAMP_DIGITS = 16;

  private transient ListState<Long> positionState;
  /** The next sequence to emit; -1 until run() or a restore sets it. */
  private transient long next;

  private volatile boolean running = true;

  public GeneratorSource(long records, long keys, int valueSize) {
    this(records, keys, pattern(valueSize), false);
  }

  /**
   * A source whose records carry copies of {@code value} (the remote peer's StringWrapper) and
   * that, with {@code holdOpen}, does not return after its last record (see {@link #holdOpen}).
   */
  public GeneratorSource(long records, long keys, byte[] value, boolean holdOpen) {
    this(records, keys, value, holdOpen, 0.0, -1);
  }

  /**
   * The remote peer's source with pacing ({@code rate} records per second over all subtasks, 0 =
   * unpaced) and, when {@code stampAt >= 0}, a due-time stamp written into each copy of {@code
   * value} from that index on.
   */
  public GeneratorSource(
      long records, long keys, byte[] value, boolean holdOpen, double rate, int stampAt) {
    if (stampAt >= 0 && stampAt + STAMP_DIGITS > value.length) {
      throw new IllegalArgumentException("a stamp needs values of at least 16 characters");
    }
    this.records = records;
    this.keys = Math.max(1, keys);
    this.value = value.clone();
    this.holdOpen = holdOpen;
    this.rate = rate;
    this.stampAt = stampAt;
  }

  /** Now in microseconds since the Unix epoch. */
  private static long unixMicros() {
    return ChronoUnit.MICROS.between(Instant.EPOCH, Instant.now());
  }

  /** A copy of {@code value} with {@code dueMicros} written as 16 digits from {@code at}. */
  private static byte[] stamped(byte[] value, int at, long dueMicros) {
    byte[] copy = value.clone();
    long n = dueMicros;
    for (int i = at + STAMP_DIGITS - 1; i >= at; i--) {
      copy[i] = (byte) ('0' + (int) (n % 10));
      n /= 10;
    }
    return copy;
  }

  /** {@code size} ASCII bytes of the same pattern statefun-rs' generator uses. */
  static byte[] pattern(int size) {
    final byte[] alphabet = "abcdefghijklmnopqrstuvwxyz0123456789".getBytes();
    byte[] value = new byte[size];
    for (int i = 0; i < size; i++) {
      value[i] = alphabet[i % alphabet.length];
    }
    return value;
  }

  @Override
  public void initializeState(FunctionInitializationContext context) throws Exception {
    positionState =
        context
            .getOperatorStateStore()
            .getListState(new ListStateDescriptor<>("generator-next", Long.class));
    next = -1;
    if (context.isRestored()) {
      for (Long position : positionState.get()) {
        next = position;
      }
    }
  }

  @Override
  public void run(SourceContext<Record> ctx) {
    final int stride = getRuntimeContext().getNumberOfParallelSubtasks();
    if (next < 0) {
      next = getRuntimeContext().getIndexOfThisSubtask();
    }
    final byte[] value = this.value;
    final Object lock = ctx.getCheckpointLock();
    // Pacing: this subtask's record n is due intervalNanos * n after its start.
    final long intervalNanos = rate > 0 ? Math.round(stride * 1e9 / rate) : 0;
    final long startNanos = System.nanoTime();
    final long startMicros = unixMicros();
    long emitted = 0;
    while (running && next < records) {
      long allowed = BATCH;
      if (intervalNanos > 0) {
        final long elapsed = System.nanoTime() - startNanos;
        final long due = elapsed / intervalNanos + 1;
        allowed = Math.min(BATCH, due - emitted);
        if (allowed <= 0) {
          LockSupport.parkNanos(emitted * intervalNanos - elapsed);
          continue;
        }
      }
      final long batchMicros = stampAt >= 0 && intervalNanos == 0 ? unixMicros() : 0;
      synchronized (lock) {
        for (long i = 0; i < allowed && next < records; i++) {
          final long s = next;
          final byte[] v;
          if (stampAt < 0) {
            v = value.clone();
          } else if (intervalNanos > 0) {
            v = stamped(value, stampAt, startMicros + Math.round(emitted * intervalNanos / 1e3));
          } else {
            v = stamped(value, stampAt, batchMicros);
          }
          ctx.collect(new Record(Long.toString(s % keys), v));
          next = s + stride;
          emitted++;
        }
      }
    }
    while (holdOpen && running) {
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
  }

  @Override
  public void snapshotState(FunctionSnapshotContext context) throws Exception {
    positionState.update(Collections.singletonList(next));
  }

  @Override
  public void notifyCheckpointComplete(long checkpointId) {
    if (getRuntimeContext().getIndexOfThisSubtask() == 0) {
      Stats.checkpoints.incrementAndGet();
    }
  }

  @Override
  public void cancel() {
    running = false;
  }
}
