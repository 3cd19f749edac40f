package statefun.peer;

import org.apache.flink.statefun.sdk.io.Router;

/** Sends each record to {@code bench/counter} with the record's key as the id. */
final class BenchRouter implements Router<Record> {
  @Override
  public void route(Record record, Downstream<Record> downstream) {
    downstream.forward(Ids.COUNTER, record.key, record);
  }
}
