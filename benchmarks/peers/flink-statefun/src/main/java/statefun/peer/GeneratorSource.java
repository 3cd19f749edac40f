package statefun.peer;

import java.util.Collections;
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
    this.records = records;
    this.keys = Math.max(1, keys);
    this.value = value.clone();
    this.holdOpen = holdOpen;
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
    while (running && next < records) {
      synchronized (lock) {
        for (int i = 0; i < BATCH && next < records; i++) {
          final long s = next;
          ctx.collect(new Record(Long.toString(s % keys), value.clone()));
          next = s + stride;
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
