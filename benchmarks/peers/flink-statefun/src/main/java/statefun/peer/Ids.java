package statefun.peer;

import org.apache.flink.statefun.sdk.FunctionType;
import org.apache.flink.statefun.sdk.io.EgressIdentifier;
import org.apache.flink.statefun.sdk.io.IngressIdentifier;

/** The names of the benchmark's parts, the same as `statefun bench` uses. */
final class Ids {
  private Ids() {}

  /** The keyed counter function. */
  static final FunctionType COUNTER = new FunctionType("bench", "counter");

  /** The generator ingress (backed by {@link GeneratorSource}). */
  static final IngressIdentifier<Record> GENERATOR =
      new IngressIdentifier<>(Record.class, "bench", "generator");

  /**
   * Completions: each counter instance sends its count here once, when it reaches the number of
   * records expected for its id (and the negated count if it ever goes past it).
   */
  static final EgressIdentifier<Long> DONE = new EgressIdentifier<>("bench", "done", Long.class);

  /** The remote counter (served by ../remote/counter_server.py) in the remote peer. */
  static final FunctionType REMOTE_COUNTER = new FunctionType("bench", "remote-counter");

  /** The type of the messages to the remote counter: a StateFun StringWrapper. */
  static final String STRING_TYPENAME = "io.statefun.types/string";

  /** Global configuration keys read by {@link BenchModule}. */
  static final String RECORDS = "bench.records";

  static final String KEYS = "bench.keys";

  /**
   * {@code embedded} (default: {@link PeerBench}), {@code remote} ({@link RemotePeerBench}) or
   * {@code none} ({@link ModulePeer}: the module binds nothing).
   */
  static final String MODE = "bench.mode";
}
