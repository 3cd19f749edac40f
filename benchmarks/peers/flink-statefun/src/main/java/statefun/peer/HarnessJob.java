package statefun.peer;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.flink.statefun.flink.harness.Harness;

/**
 * A StateFun {@link Harness} job run on a daemon thread ({@code Harness.start()} blocks until the
 * job finishes), so that the main thread can watch for completion, the job's end or a timeout.
 * Shared by the embedded and the remote peer.
 */
final class HarnessJob {
  /** Why the job failed, if it did. */
  final AtomicReference<Throwable> error = new AtomicReference<>();
  /** Counted down when the job has ended, failed or not. */
  final CountDownLatch ended = new CountDownLatch(1);

  private HarnessJob() {}

  static HarnessJob start(Harness harness) {
    HarnessJob job = new HarnessJob();
    Thread thread =
        new Thread(
            () -> {
              try {
                harness.start(); // blocks until the job finishes
              } catch (Throwable t) {
                job.error.set(t);
              } finally {
                job.ended.countDown();
              }
            },
            "statefun-harness");
    thread.setDaemon(true);
    thread.start();
    return job;
  }
}
