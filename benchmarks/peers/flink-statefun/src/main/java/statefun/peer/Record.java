package statefun.peer;

/**
 * One generated record: the key (decimal text of {@code sequence % keys}) and the payload.
 *
 * <p>A plain POJO, so the Kryo payload serializer handles it as a Flink user's type would be.
 */
public final class Record {
  public String key;
  public byte[] value;

  public Record() {}

  public Record(String key, byte[] value) {
    this.key = key;
    this.value = value;
  }
}
