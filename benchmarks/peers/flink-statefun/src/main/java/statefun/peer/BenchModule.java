package statefun.peer;

import java.util.Map;
import org.apache.flink.statefun.sdk.spi.StatefulFunctionModule;

/**
 * The embedded module (found through META-INF/services): the generator's router and the counter.
 * The ingress and egress themselves are bound by the Harness ({@code withFlinkSourceFunction},
 * {@code withConsumingEgress}).
 */
public final class BenchModule implements StatefulFunctionModule {
  @Override
  public void configure(Map<String, String> globalConfiguration, Binder binder) {
    final long records = Long.parseLong(globalConfiguration.getOrDefault(Ids.RECORDS, "0"));
    final long keys = Long.parseLong(globalConfiguration.getOrDefault(Ids.KEYS, "1"));
    binder.bindIngressRouter(Ids.GENERATOR, new BenchRouter());
    binder.bindFunctionProvider(Ids.COUNTER, type -> new CounterFunction(records, keys));
  }
}
