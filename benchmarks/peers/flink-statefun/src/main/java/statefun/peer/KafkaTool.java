package statefun.peer;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Kafka steps of examples/migration/run-on-flink.sh, with the Kafka client already on this
 * project's class path (the broker's own jars carry no console tools):
 *
 * <pre>
 *   KafkaTool create-topics BOOTSTRAP TOPIC:PARTITIONS...
 *   KafkaTool produce BOOTSTRAP TOPIC            &lt; lines PARTITION\tKEY\tVALUE
 *   KafkaTool read-committed BOOTSTRAP TOPIC N SETTLE_SECONDS TIMEOUT_SECONDS
 * </pre>
 *
 * <p>{@code read-committed} reads TOPIC from the beginning as a read_committed consumer until N
 * records came (at most TIMEOUT_SECONDS), then SETTLE_SECONDS more so that a duplicate would
 * show, and prints each record as {@code KEY\tVALUE}; it exits 1 if fewer than N came.
 */
public final class KafkaTool {

  private KafkaTool() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      usage();
    }
    String bootstrap = args[1];
    switch (args[0]) {
      case "create-topics":
        createTopics(bootstrap, List.of(args).subList(2, args.length));
        break;
      case "produce":
        produce(bootstrap, args[2]);
        break;
      case "read-committed":
        if (args.length != 6) {
          usage();
        }
        int n = Integer.parseInt(args[3]);
        int got =
            readCommitted(bootstrap, args[2], n, Long.parseLong(args[4]), Long.parseLong(args[5]));
        if (got < n) {
          System.err.printf("kafka-tool: %d of %d records in %s%n", got, n, args[2]);
          System.exit(1);
        }
        break;
      default:
        usage();
    }
  }

  private static void usage() {
    System.err.println(
        "usage: KafkaTool create-topics BOOTSTRAP TOPIC:PARTITIONS... | produce BOOTSTRAP TOPIC"
            + " | read-committed BOOTSTRAP TOPIC N SETTLE_SECONDS TIMEOUT_SECONDS");
    System.exit(2);
  }

  private static void createTopics(String bootstrap, List<String> topics) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    List<NewTopic> create = new ArrayList<>();
    for (String t : topics) {
      int colon = t.lastIndexOf(':');
      create.add(
          new NewTopic(t.substring(0, colon), Integer.parseInt(t.substring(colon + 1)), (short) 1));
    }
    try (AdminClient admin = AdminClient.create(p)) {
      admin.createTopics(create).all().get(60, TimeUnit.SECONDS);
    }
  }

  private static void produce(String bootstrap, String topic) throws Exception {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("enable.idempotence", "true");
    p.put("key.serializer", StringSerializer.class.getName());
    p.put("value.serializer", StringSerializer.class.getName());
    int n = 0;
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(p);
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      String line;
      while ((line = in.readLine()) != null) {
        String[] f = line.split("\t", 3);
        producer.send(new ProducerRecord<>(topic, Integer.parseInt(f[0]), f[1], f[2]));
        n++;
      }
      producer.flush();
    }
    System.err.printf("kafka-tool: produced %d records to %s%n", n, topic);
  }

  private static int readCommitted(
      String bootstrap, String topic, int n, long settleSeconds, long timeoutSeconds) {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("group.id", topic + "-check-" + ProcessHandle.current().pid());
    p.put("auto.offset.reset", "earliest");
    p.put("enable.auto.commit", "false");
    p.put("isolation.level", "read_committed");
    p.put("key.deserializer", StringDeserializer.class.getName());
    p.put("value.deserializer", StringDeserializer.class.getName());
    int got = 0;
    try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
      consumer.subscribe(Collections.singletonList(topic));
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
      boolean settling = false;
      while (System.nanoTime() < deadline) {
        if (got >= n && !settling) {
          settling = true;
          deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(settleSeconds);
        }
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
          System.out.println(r.key() + "\t" + r.value());
          got++;
        }
      }
    }
    System.out.flush();
    return got;
  }
}
