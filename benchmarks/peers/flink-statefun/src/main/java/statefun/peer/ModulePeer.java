package statefun.peer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;
import java.util.TreeMap;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.GlobalConfiguration;
import org.apache.flink.statefun.flink.harness.Harness;

/**
 * Runs a StateFun application as its users deploy it on Apache Flink StateFun 3.3.0: a
 * module.yaml (remote function endpoints, Kafka or Kinesis ingresses and egresses, read by
 * StateFun's RemoteModule and its I/O bundle) and a flink-conf.yaml, in the {@link Harness} (a
 * Flink MiniCluster in this JVM) instead of a Flink cluster. No Java code of the application's is
 * involved. Used by examples/migration/run-on-flink.sh to run the same files on both runtimes.
 *
 * <p>Options: {@code --module-yaml PATH [--flink-conf-dir DIR]}. Every setting of {@code
 * DIR/flink-conf.yaml} (read by Flink's own parser) is passed to the job's configuration. Runs
 * until the job ends (a Kafka ingress never does: stop the JVM) or fails (exit 1).
 */
public final class ModulePeer {

  private ModulePeer() {}

  public static void main(String[] args) throws Exception {
    String moduleYaml = null;
    String confDir = null;
    for (int i = 0; i < args.length; i += 2) {
      if (i + 1 >= args.length) {
        usage("missing value for " + args[i]);
      }
      switch (args[i]) {
        case "--module-yaml":
          moduleYaml = args[i + 1];
          break;
        case "--flink-conf-dir":
          confDir = args[i + 1];
          break;
        default:
          usage("unknown option " + args[i]);
      }
    }
    if (moduleYaml == null) {
      usage("--module-yaml is required");
    }
    Path module = Paths.get(moduleYaml).toAbsolutePath();
    if (!Files.isReadable(module)) {
      usage("cannot read " + module);
    }
    Configuration flinkConf = new Configuration();
    if (confDir != null) {
      if (!Files.isReadable(Paths.get(confDir, "flink-conf.yaml"))) {
        usage("no flink-conf.yaml in " + confDir);
      }
      flinkConf = GlobalConfiguration.loadConfiguration(confDir);
    }
    Map<String, String> settings = new TreeMap<>(flinkConf.toMap());
    // Local only: the MiniCluster's REST endpoint on a free loopback port.
    settings.putIfAbsent("rest.address", "127.0.0.1");
    settings.putIfAbsent("rest.bind-address", "127.0.0.1");
    settings.putIfAbsent("rest.bind-port", "0");
    // StateFun's RemoteModule reads this module.yaml (default: classpath:module.yaml).
    settings.put("statefun.remote.module-name", module.toUri().toString());

    Harness harness = new Harness().withFlinkJobName("statefun-rs migration peer");
    for (Map.Entry<String, String> e : settings.entrySet()) {
      harness.withConfiguration(e.getKey(), e.getValue());
    }
    // This Maven project's own embedded module (META-INF/services) binds nothing here.
    harness.withGlobalConfiguration(Ids.MODE, "none");
    System.err.println("module-peer: StateFun 3.3.0 harness, module " + module);
    for (Map.Entry<String, String> e : settings.entrySet()) {
      System.err.println("module-peer:   " + e.getKey() + ": " + e.getValue());
    }
    try {
      harness.start(); // blocks while the job runs
    } catch (Throwable t) {
      System.err.println("module-peer: the job failed:");
      t.printStackTrace();
      Runtime.getRuntime().halt(1);
    }
    System.err.println("module-peer: the job finished");
    Runtime.getRuntime().halt(0);
  }

  private static void usage(String why) {
    System.err.println("module-peer: " + why);
    System.err.println("usage: ModulePeer --module-yaml PATH [--flink-conf-dir DIR]");
    System.exit(2);
  }
}
