package statefun.peer;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.flink.statefun.flink.harness.Harness;

/**
 * The workload of {@code statefun bench} on Apache Flink StateFun 3.3.0 (embedded Java function,
 * local Harness = a Flink MiniCluster in this JVM).
 *
 * <pre>
 *   GeneratorSource (parallel, p subtasks) -> router -> keyBy id -> bench/counter (p subtasks)
 *                                                                       |-> DONE egress (one
 *                                                                           record per id)
 * </pre>
 *
 * <p>Options: {@code --records N --keys K --value-size B --parallelism P --state heap|rocksdb
 * --checkpoint-interval D --rocksdb-managed-mb M --linger S --timeout S}.
 *
 * <p>The run is over when every id has reported its expected count (timed in the sink). The job
 * normally ends by itself then (bounded source); if it does not within {@code --linger} seconds
 * (StateFun's feedback loop or a final checkpoint keeping it alive) the JVM exits anyway. Prints
 * one {@code peer: ...} line and exits 0, or 1 on a count mismatch or a failed job.
 */
public final class PeerBench {

  private PeerBench() {}

  private static final class Options {
    long records = 10_000_000L;
    long keys = 1_000_000L;
    int valueSize = 100;
    int parallelism = 1;
    String state = "heap";
    /** Checkpoint interval in ms; -1: 1 s for rocksdb, none for heap. */
    long checkpointIntervalMs = -1;

    long rocksdbManagedMb = 64;
    long lingerSeconds = 60;
    long timeoutSeconds = 1800;
  }

  public static void main(String[] args) throws Exception {
    final Options o;
    try {
      o = parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println("peer: " + e.getMessage());
      System.err.println(
          "usage: PeerBench [--records N] [--keys K] [--value-size B] [--parallelism P]"
              + " [--state heap|rocksdb] [--checkpoint-interval 1s|500ms|0]"
              + " [--rocksdb-managed-mb M] [--linger S] [--timeout S]");
      System.exit(2);
      return;
    }
    final long jvmStartMillis = ManagementFactory.getRuntimeMXBean().getStartTime();
    final long expectedCompletions = Math.min(o.keys, o.records);
    final long checkpointMs =
        o.checkpointIntervalMs >= 0
            ? o.checkpointIntervalMs
            : (o.state.equals("rocksdb") ? 1000 : 0);

    Harness harness =
        new Harness()
            // The ingress type is a POJO: Kryo payloads, as the Harness examples use.
            .withKryoMessageSerializer()
            .withFlinkJobName("statefun-rs peer bench")
            .withParallelism(o.parallelism)
            // StatefulFunctionsJob turns object reuse on itself; set it anyway, as a tuned
            // Flink user would.
            .withConfiguration("pipeline.object-reuse", "true")
            // Fail fast instead of restarting (the default with checkpoints is to restart).
            .withConfiguration("restart-strategy", "none")
            // The MiniCluster's REST endpoint: loopback, any free port.
            .withConfiguration("rest.address", "127.0.0.1")
            .withConfiguration("rest.bind-address", "127.0.0.1")
            .withConfiguration("rest.bind-port", "0")
            .withGlobalConfiguration(Ids.RECORDS, Long.toString(o.records))
            .withGlobalConfiguration(Ids.KEYS, Long.toString(o.keys))
            .withFlinkSourceFunction(
                Ids.GENERATOR, new GeneratorSource(o.records, o.keys, o.valueSize))
            .withConsumingEgress(Ids.DONE, new CompletionConsumer(expectedCompletions));

    Path checkpointDir = null;
    if (o.state.equals("rocksdb")) {
      harness
          .withConfiguration("state.backend", "rocksdb")
          .withConfiguration("state.backend.incremental", "true")
          // RocksDB's memory comes from Flink managed memory, shared by the slots of the one
          // MiniCluster task manager; statefun-rs' bench gives each worker a 64 MiB block cache.
          .withConfiguration(
              "taskmanager.memory.managed.size", (o.rocksdbManagedMb * o.parallelism) + "m");
    } else {
      harness.withConfiguration("state.backend", "hashmap");
    }
    if (checkpointMs > 0) {
      checkpointDir = Files.createTempDirectory("statefun-peer-checkpoints-");
      harness
          .withConfiguration("execution.checkpointing.interval", checkpointMs + " ms")
          .withConfiguration("execution.checkpointing.mode", "EXACTLY_ONCE")
          .withConfiguration("state.checkpoints.dir", checkpointDir.toUri().toString());
    }

    System.err.printf(
        Locale.ROOT,
        "peer: StateFun 3.3.0 harness, %d records, %d keys, %d-byte values, parallelism %d,"
            + " state %s, checkpoints %s%n",
        o.records,
        o.keys,
        o.valueSize,
        o.parallelism,
        o.state,
        checkpointMs > 0 ? "every " + checkpointMs + " ms" : "off");

    HarnessJob job = HarnessJob.start(harness);

    // Wait for the last completion, the job's end (a failure, or a mismatch), or the timeout.
    final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(o.timeoutSeconds);
    boolean complete = false;
    boolean timedOut = false;
    while (true) {
      if (Stats.done.await(20, TimeUnit.MILLISECONDS)) {
        complete = true;
        break;
      }
      if (job.ended.getCount() == 0) {
        complete = Stats.done.getCount() == 0;
        break;
      }
      if (System.nanoTime() > deadline) {
        timedOut = true;
        break;
      }
    }
    final long completeNanos = System.nanoTime();
    boolean jobFinished = job.ended.await(complete ? o.lingerSeconds : 0, TimeUnit.SECONDS);
    final long teardownMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - completeNanos);

    final long invocations = Stats.invocations();
    final long completed = Stats.completed.get();
    final long counted = Stats.completedCounts.get();
    final long overflows = Stats.overflows.get();
    final boolean started = Stats.started();
    final double seconds =
        complete ? (Stats.doneNanos - Stats.firstInvocationNanos.get()) / 1e9 : Double.NaN;
    final long startupMs = started ? Stats.firstInvocationMillis - jvmStartMillis : -1;

    Throwable error = job.error.get();
    boolean ok =
        complete
            && error == null
            && completed == expectedCompletions
            && counted == o.records
            && overflows == 0
            && (!jobFinished || invocations == o.records);
    if (error != null) {
      System.err.println("peer: the job failed:");
      error.printStackTrace();
    }
    if (timedOut) {
      System.err.printf(
          Locale.ROOT, "peer: no completion within %d s (--timeout)%n", o.timeoutSeconds);
    }
    if (!ok) {
      System.err.printf(
          Locale.ROOT,
          "peer: COUNT MISMATCH or failure: %d/%d ids completed, counted %d of %d records,"
              + " %d overflows, %d invocations%n",
          completed,
          expectedCompletions,
          counted,
          o.records,
          overflows,
          invocations);
    }
    System.out.printf(
        Locale.ROOT,
        "peer: records=%d keys=%d value_size=%d parallelism=%d state=%s checkpoint_ms=%d"
            + " seconds=%.3f records_per_s=%.0f startup_ms=%d completed=%d/%d counted=%d"
            + " invocations=%d checkpoints=%d job_finished=%s teardown_ms=%d ok=%s%n",
        o.records,
        o.keys,
        o.valueSize,
        o.parallelism,
        o.state,
        checkpointMs,
        seconds,
        o.records / seconds,
        startupMs,
        completed,
        expectedCompletions,
        counted,
        invocations,
        Stats.checkpoints.get(),
        jobFinished,
        teardownMs,
        ok);
    System.out.flush();
    if (checkpointDir != null) {
      deleteQuietly(checkpointDir);
    }
    // The MiniCluster's non-daemon threads may still be around (or the job still running when
    // it did not end within --linger): leave without waiting for them.
    Runtime.getRuntime().halt(ok ? 0 : 1);
  }

  private static void deleteQuietly(Path dir) {
    try (Stream<Path> paths = Files.walk(dir)) {
      paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException ignored) {
      // a temp directory; best effort
    }
  }

  private static Options parse(String[] args) {
    Options o = new Options();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      String value;
      int eq = arg.indexOf('=');
      if (arg.startsWith("--") && eq > 0) {
        value = arg.substring(eq + 1);
        arg = arg.substring(0, eq);
      } else {
        if (i + 1 >= args.length) {
          throw new IllegalArgumentException("missing value for " + arg);
        }
        value = args[++i];
      }
      switch (arg) {
        case "--records":
          o.records = parseCount(arg, value);
          break;
        case "--keys":
          o.keys = parseCount(arg, value);
          break;
        case "--value-size":
          o.valueSize = (int) parseCount(arg, value);
          break;
        case "--parallelism":
        case "-p":
        case "-w":
          o.parallelism = (int) parseCount(arg, value);
          break;
        case "--state":
          if (!value.equals("heap") && !value.equals("rocksdb")) {
            throw new IllegalArgumentException("--state must be heap or rocksdb, not " + value);
          }
          o.state = value;
          break;
        case "--checkpoint-interval":
          o.checkpointIntervalMs = parseMillis(arg, value);
          break;
        case "--rocksdb-managed-mb":
          o.rocksdbManagedMb = parseCount(arg, value);
          break;
        case "--linger":
          o.lingerSeconds = parseCount(arg, value);
          break;
        case "--timeout":
          o.timeoutSeconds = parseCount(arg, value);
          break;
        default:
          throw new IllegalArgumentException("unknown option " + arg);
      }
    }
    if (o.records < 1 || o.keys < 1 || o.parallelism < 1) {
      throw new IllegalArgumentException("--records, --keys and --parallelism must be >= 1");
    }
    return o;
  }

  private static long parseCount(String name, String value) {
    try {
      long n = Long.parseLong(value.replace("_", ""));
      if (n < 0) {
        throw new NumberFormatException();
      }
      return n;
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(name + " takes a non-negative integer, not " + value);
    }
  }

  /** "1s", "500ms", "2m", or a plain number of milliseconds; 0 turns checkpoints off. */
  private static long parseMillis(String name, String value) {
    String v = value.trim().toLowerCase(Locale.ROOT);
    try {
      if (v.endsWith("ms")) {
        return Long.parseLong(v.substring(0, v.length() - 2).trim());
      } else if (v.endsWith("s")) {
        return Math.round(Double.parseDouble(v.substring(0, v.length() - 1).trim()) * 1000);
      } else if (v.endsWith("m")) {
        return Math.round(Double.parseDouble(v.substring(0, v.length() - 1).trim()) * 60_000);
      }
      return Long.parseLong(v);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(name + " takes a duration like 1s or 500ms, not " + value);
    }
  }
}
