package statefun.peer;

import org.apache.flink.statefun.sdk.Context;
import org.apache.flink.statefun.sdk.StatefulFunction;
import org.apache.flink.statefun.sdk.annotations.Persisted;
import org.apache.flink.statefun.sdk.state.PersistedValue;

/**
 * {@code bench/counter}: keeps a {@code long} count per id in a {@link PersistedValue} and
 * increments it per message, like statefun-rs' bench counter.
 *
 * <p>So that the work cannot be skipped and the run can be checked exactly, an instance whose
 * count reaches the number of records expected for its id sends that count to the {@link
 * Ids#DONE} egress once (and the negated count should it ever go past it). StateFun makes one
 * function object per type per subtask; each counts its invocations for the final check.
 */
final class CounterFunction implements StatefulFunction {

  @Persisted
  private final PersistedValue<Long> count = PersistedValue.of("count", Long.class);

  /** {@code records / keys}: every id gets at least this many records. */
  private final long base;
  /** {@code records % keys}: ids below this get one more. */
  private final long extra;

  /** Invocations of this object (read once the job is over). */
  long invocations;

  private boolean invoked;

  CounterFunction(long records, long keys) {
    long k = Math.max(1, keys);
    this.base = records / k;
    this.extra = records % k;
    Stats.register(this);
  }

  @Override
  public void invoke(Context context, Object input) {
    if (!invoked) {
      invoked = true;
      Stats.markFirstInvocation();
    }
    invocations++;
    Long current = count.get();
    long n = (current == null ? 0L : current) + 1;
    count.set(n);
    if (n >= base) {
      long expected = base + (Long.parseLong(context.self().id()) < extra ? 1 : 0);
      if (n == expected) {
        context.send(Ids.DONE, n);
      } else if (n > expected) {
        context.send(Ids.DONE, -n);
      }
    }
  }
}
