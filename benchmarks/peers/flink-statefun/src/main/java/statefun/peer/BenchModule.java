package statefun.peer;

import java.util.Map;
import org.apache.flink.statefun.sdk.spi.StatefulFunctionModule;

/**
 * The embedded module (found through META-INF/services): the generator's router and the counter.
 * The ingress and egress themselves are bound by the Harness ({@code withFlinkSourceFunction},
 * {@code withConsumingEgress}).
 *
 * <p>In the remote peer ({@code bench.mode = remote}, {@link RemotePeerBench}) it binds only the
 * router to {@code bench/remote-counter}; that function comes from the {@code
 * io.statefun.endpoints.v2/http} endpoint in the module.yaml StateFun's RemoteModule loads.
 *
 * <p>With {@code bench.mode = none} ({@link ModulePeer}) it binds nothing: the application is
 * entirely the module.yaml's.
 */
public final class BenchModule implements StatefulFunctionModule {
  @Override
  public void configure(Map<String, String> globalConfiguration, Binder binder) {
    final long records = Long.parseLong(globalConfiguration.getOrDefault(Ids.RECORDS, "0"));
    final long keys = Long.parseLong(globalConfiguration.getOrDefault(Ids.KEYS, "1"));
    if ("none".equals(globalConfiguration.get(Ids.MODE))) {
      return;
    }
    if ("remote".equals(globalConfiguration.get(Ids.MODE))) {
      binder.bindIngressRouter(Ids.GENERATOR, new RemoteRouter());
      return;
    }
    binder.bindIngressRouter(Ids.GENERATOR, new BenchRouter());
    binder.bindFunctionProvider(Ids.COUNTER, type -> new CounterFunction(records, keys));
  }
}
