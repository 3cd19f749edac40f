package statefun.peer;

import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What the function and the completion sink report to {@link PeerBench#main}. The Harness runs
 * the job's tasks in this JVM, and the job's classes resolve to the application class loader
 * (there are no job jars), so these statics are shared.
 */
final class Stats {
  private Stats() {}

  private static final long UNSET = Long.MIN_VALUE;

  /** System.nanoTime() of the first invocation of any counter. */
  static final AtomicLong firstInvocationNanos = new AtomicLong(UNSET);
  /** Wall-clock millis of the same moment, for start-up time against the JVM start. */
  static volatile long firstInvocationMillis;

  /** Completions received by the DONE egress, and the sum of their counts. */
  static final AtomicLong completed = new AtomicLong();

  static final AtomicLong completedCounts = new AtomicLong();
  /** Counts that went past the expected number (must stay 0). */
  static final AtomicLong overflows = new AtomicLong();

  /** Released when the expected number of completions has arrived. */
  static final CountDownLatch done = new CountDownLatch(1);

  static volatile long doneNanos;

  /** Checkpoints completed (as seen by source subtask 0). */
  static final AtomicLong checkpoints = new AtomicLong();

  static final Queue<CounterFunction> functions = new ConcurrentLinkedQueue<>();

  static void register(CounterFunction function) {
    functions.add(function);
  }

  static void markFirstInvocation() {
    long now = System.nanoTime();
    long millis = System.currentTimeMillis();
    if (firstInvocationNanos.compareAndSet(UNSET, now)) {
      firstInvocationMillis = millis;
    }
  }

  static boolean started() {
    return firstInvocationNanos.get() != UNSET;
  }

  static long invocations() {
    long total = 0;
    for (CounterFunction f : functions) {
      total += f.invocations;
    }
    return total;
  }

  /** Called by the DONE egress's sink for each completion. */
  static void onCompletion(long count, long expectedCompletions) {
    if (count < 0) {
      overflows.incrementAndGet();
      return;
    }
    completedCounts.addAndGet(count);
    if (completed.incrementAndGet() == expectedCompletions) {
      doneNanos = System.nanoTime();
      done.countDown();
    }
  }
}
