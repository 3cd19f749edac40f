package statefun.peer;

import com.google.protobuf.UnsafeByteOperations;
import org.apache.flink.statefun.sdk.io.Router;
import org.apache.flink.statefun.sdk.reqreply.generated.TypedValue;

/**
 * The remote peer's router: sends each record to {@code bench/remote-counter} with the record's
 * key as the id, as the {@link TypedValue} a remote function takes ({@code
 * io.statefun.types/string}: the record's value is already a StringWrapper).
 *
 * <p>Like StateFun's own {@code AutoRoutableProtobufRouter} it forwards another type than it
 * receives; a {@code Downstream<Record>} takes any object after erasure, and the message goes
 * into the function operator as a protobuf payload (StateFun's default serializer).
 */
final class RemoteRouter implements Router<Record> {
  @Override
  @SuppressWarnings({"unchecked", "rawtypes"})
  public void route(Record record, Downstream<Record> downstream) {
    TypedValue value =
        TypedValue.newBuilder()
            .setTypename(Ids.STRING_TYPENAME)
            .setHasValue(true)
            // the record's array is a fresh copy per record: no second copy
            .setValue(UnsafeByteOperations.unsafeWrap(record.value))
            .build();
    ((Downstream) downstream).forward(Ids.REMOTE_COUNTER, record.key, value);
  }
}
