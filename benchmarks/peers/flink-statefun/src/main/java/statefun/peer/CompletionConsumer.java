package statefun.peer;

import org.apache.flink.statefun.flink.harness.io.SerializableConsumer;

/** The DONE egress's consumer (the Harness wraps it in a sink per subtask). */
final class CompletionConsumer implements SerializableConsumer<Long> {
  private static final long serialVersionUID = 1L;

  private final long expectedCompletions;

  CompletionConsumer(long expectedCompletions) {
    this.expectedCompletions = expectedCompletions;
  }

  @Override
  public void accept(Long count) {
    Stats.onCompletion(count, expectedCompletions);
  }
}
