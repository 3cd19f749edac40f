package statefun.peer;

import java.lang.management.ManagementFactory;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import org.apache.flink.statefun.flink.harness.Harness;

/**
 * The remote-function peer (../run-remote.sh): Apache Flink StateFun 3.3.0's Harness (a Flink
 * MiniCluster in this JVM) running the same parallel generator as {@link PeerBench}, routed to
 * the remote function {@code bench/remote-counter}, which the {@code
 * io.statefun.endpoints.v2/http} endpoint of {@code --module-yaml} binds (StateFun's RemoteModule
 * reads it: {@code statefun.remote.module-name = file:///...}).
 *
 * <pre>
 *   GeneratorSource (p subtasks) -> RemoteRouter (TypedValue io.statefun.types/string)
 *     -> keyBy id -> RequestReplyFunction (p subtasks) -- HTTP --> counter_server.py
 * </pre>
 *
 * <p>The job cannot know when the remote function has seen every message (the function's answers
 * come back asynchronously after the source's last record), so the source stays open after its
 * last record, as an unbounded source would (when a StateFun job's bounded source returns, the job
 * finishes and StateFun closes its HTTP client under the requests still in flight), and
 * completion comes from the function server: this class long-polls {@code <stats-url>/wait/done?timeout=1} until the server
 * reports every id complete, prints the server's line and one {@code remote-peer: ...} line, and
 * leaves with {@code Runtime.halt}: 0 when the server says the counts are exact, 1 otherwise.
 *
 * <p>Options: {@code --module-yaml PATH --stats-url http://127.0.0.1:PORT --records N --keys K
 * --value-size B --parallelism P --timeout S --rate R --stamp} ({@code --rate}: records per second
 * over all subtasks, 0 = unpaced; {@code --stamp}: each value's text starts with its due time, see
 * {@link GeneratorSource}; {@code --buffer-timeout MS}: Flink's {@code execution.buffer-timeout},
 * how long a network buffer that is not full may wait before it is sent, 100 ms unless set).
 */
public final class RemotePeerBench {

  private RemotePeerBench() {}

  public static void main(String[] args) throws Exception {
    long records = 100_000;
    long keys = 10_000;
    int valueSize = 100;
    int parallelism = 1;
    long timeoutSeconds = 1800;
    double rate = 0;
    long bufferTimeoutMs = -1;
    boolean stamp = false;
    String moduleYaml = null;
    String statsUrl = null;
    try {
      for (int i = 0; i < args.length; i++) {
        String arg = args[i];
        if (arg.equals("--stamp")) {
          stamp = true;
          continue;
        }
        if (i + 1 >= args.length) {
          throw new IllegalArgumentException("missing value for " + arg);
        }
        String value = args[++i];
        switch (arg) {
          case "--records":
            records = count(arg, value);
            break;
          case "--keys":
            keys = count(arg, value);
            break;
          case "--value-size":
            valueSize = (int) count(arg, value);
            break;
          case "--parallelism":
          case "-p":
            parallelism = (int) count(arg, value);
            break;
          case "--timeout":
            timeoutSeconds = count(arg, value);
            break;
          case "--buffer-timeout":
            bufferTimeoutMs = Long.parseLong(value);
            if (bufferTimeoutMs < 0) {
              throw new IllegalArgumentException("--buffer-timeout takes milliseconds >= 0");
            }
            break;
          case "--rate":
            rate = Double.parseDouble(value);
            if (!(rate >= 0) || Double.isInfinite(rate)) {
              throw new IllegalArgumentException("--rate takes records per second >= 0");
            }
            break;
          case "--module-yaml":
            moduleYaml = value;
            break;
          case "--stats-url":
            statsUrl = value.endsWith("/") ? value.substring(0, value.length() - 1) : value;
            break;
          default:
            throw new IllegalArgumentException("unknown option " + arg);
        }
      }
      if (moduleYaml == null || statsUrl == null) {
        throw new IllegalArgumentException("--module-yaml and --stats-url are required");
      }
      if (records < 1 || keys < 1 || parallelism < 1) {
        throw new IllegalArgumentException("--records, --keys and --parallelism must be >= 1");
      }
      if (stamp && valueSize < GeneratorSource.STAMP_DIGITS) {
        throw new IllegalArgumentException("--stamp needs --value-size 16 or more");
      }
    } catch (IllegalArgumentException e) {
      System.err.println("remote-peer: " + e.getMessage());
      System.err.println(
          "usage: RemotePeerBench --module-yaml PATH --stats-url http://127.0.0.1:PORT"
              + " [--records N] [--keys K] [--value-size B] [--parallelism P] [--timeout S]"
              + " [--rate R] [--stamp] [--buffer-timeout MS]");
      System.exit(2);
      return;
    }
    Path module = Paths.get(moduleYaml).toAbsolutePath();
    if (!Files.isReadable(module)) {
      System.err.println("remote-peer: cannot read " + module);
      System.exit(2);
      return;
    }

    final byte[] value = stringWrapper(valueSize);
    Harness harness =
        new Harness()
            // No withKryoMessageSerializer(): remote functions take TypedValue, a protobuf
            // message, so StateFun's default (protobuf payloads) is what a deployment runs.
            .withFlinkJobName("statefun-rs remote peer bench")
            .withParallelism(parallelism)
            .withConfiguration("pipeline.object-reuse", "true")
            .withConfiguration("restart-strategy", "none")
            .withConfiguration("rest.address", "127.0.0.1")
            .withConfiguration("rest.bind-address", "127.0.0.1")
            .withConfiguration("rest.bind-port", "0")
            .withConfiguration("state.backend", "hashmap")
            // StateFun's RemoteModule reads this module.yaml (default: classpath:module.yaml).
            .withConfiguration("statefun.remote.module-name", module.toUri().toString())
            .withGlobalConfiguration(Ids.MODE, "remote")
            .withGlobalConfiguration(Ids.RECORDS, Long.toString(records))
            .withGlobalConfiguration(Ids.KEYS, Long.toString(keys))
            .withFlinkSourceFunction(
                Ids.GENERATOR,
                new GeneratorSource(
                    records,
                    keys,
                    value,
                    true,
                    rate,
                    stamp ? value.length - valueSize : -1));

    System.err.printf(
        Locale.ROOT,
        "remote-peer: StateFun 3.3.0 harness, %d records, %d keys, %d-character strings,"
            + " parallelism %d, heap state, module %s%n",
        records,
        keys,
        valueSize,
        parallelism,
        module);

    if (bufferTimeoutMs >= 0) {
      harness.withConfiguration("execution.buffer-timeout", bufferTimeoutMs + " ms");
    }
    HarnessJob job = HarnessJob.start(harness);

    HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    HttpRequest poll =
        HttpRequest.newBuilder(URI.create(statsUrl + "/wait/done?timeout=1"))
            .timeout(Duration.ofSeconds(10))
            .GET()
            .build();
    final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
    String stats = "";
    boolean done = false;
    boolean jobEndedEarly = false;
    int errors = 0;
    while (true) {
      try {
        stats = http.send(poll, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8)).body();
        errors = 0;
        if (stats.contains(" done=true")) {
          done = true;
          break;
        }
      } catch (java.io.IOException e) {
        if (++errors >= 5) {
          System.err.println("remote-peer: the function server does not answer: " + e);
          break;
        }
        Thread.sleep(200);
      }
      if (job.ended.getCount() == 0) {
        // A failure, or (should the source ever return) a job that finished with remote
        // requests in flight: either way the function will not see every message.
        jobEndedEarly = true;
        System.err.println("remote-peer: the job ended before the function server was complete");
        break;
      }
      if (System.nanoTime() > deadline) {
        System.err.printf(
            Locale.ROOT, "remote-peer: not complete within %d s (--timeout)%n", timeoutSeconds);
        break;
      }
    }
    final long jvmCpuNanos = processCpuNanos();
    final boolean ok = done && stats.contains(" ok=true") && job.error.get() == null;
    Throwable error = job.error.get();
    if (error != null) {
      System.err.println("remote-peer: the job failed:");
      error.printStackTrace();
    }
    if (!ok) {
      System.err.println("remote-peer: COUNT MISMATCH or failure; server: " + stats.trim());
    }
    System.out.println(stats.trim());
    System.out.printf(
        Locale.ROOT,
        "remote-peer: records=%d keys=%d value_size=%d parallelism=%d done=%s job_failed=%s"
            + " jvm_cpu_s=%.2f jvm_start_unix_ms=%d ok=%s%n",
        records,
        keys,
        valueSize,
        parallelism,
        done,
        jobEndedEarly || error != null,
        jvmCpuNanos / 1e9,
        ManagementFactory.getRuntimeMXBean().getStartTime(),
        ok);
    System.out.flush();
    // The MiniCluster and the job are still running (the source idles until cancelled): leave
    // without waiting for them.
    Runtime.getRuntime().halt(ok ? 0 : 1);
  }

  /** A protobuf StringWrapper (field 1, length-delimited) of the generator's ASCII pattern. */
  static byte[] stringWrapper(int size) {
    byte[] text = GeneratorSource.pattern(size);
    byte[] varint = new byte[10];
    int n = 0;
    long v = text.length;
    while (v >= 0x80) {
      varint[n++] = (byte) ((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    varint[n++] = (byte) v;
    if (text.length == 0) {
      return new byte[0]; // proto3: an empty string is not written at all
    }
    byte[] out = new byte[1 + n + text.length];
    out[0] = 0x0a;
    System.arraycopy(varint, 0, out, 1, n);
    System.arraycopy(text, 0, out, 1 + n, text.length);
    return out;
  }

  private static long processCpuNanos() {
    java.lang.management.OperatingSystemMXBean os = ManagementFactory.getOperatingSystemMXBean();
    if (os instanceof com.sun.management.OperatingSystemMXBean) {
      return ((com.sun.management.OperatingSystemMXBean) os).getProcessCpuTime();
    }
    return -1;
  }

  private static long count(String name, String value) {
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
}
