package fhirpme.interop;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.apache.parquet.ParquetReadOptions;
import org.apache.parquet.column.ParquetProperties.WriterVersion;
import org.apache.parquet.column.values.bloomfilter.BloomFilter;
import org.apache.parquet.crypto.ColumnEncryptionProperties;
import org.apache.parquet.crypto.DecryptionKeyRetriever;
import org.apache.parquet.crypto.FileDecryptionProperties;
import org.apache.parquet.crypto.FileEncryptionProperties;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCipher;
import org.apache.parquet.example.data.Group;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.ParquetFileWriter;
import org.apache.parquet.hadoop.ParquetReader;
import org.apache.parquet.hadoop.ParquetWriter;
import org.apache.parquet.hadoop.api.ReadSupport;
import org.apache.parquet.hadoop.example.ExampleParquetWriter;
import org.apache.parquet.hadoop.example.GroupReadSupport;
import org.apache.parquet.hadoop.metadata.BlockMetaData;
import org.apache.parquet.hadoop.metadata.ColumnChunkMetaData;
import org.apache.parquet.hadoop.metadata.ColumnPath;
import org.apache.parquet.hadoop.metadata.CompressionCodecName;
import org.apache.parquet.hadoop.metadata.FileMetaData;
import org.apache.parquet.hadoop.metadata.ParquetMetadata;
import org.apache.parquet.internal.column.columnindex.ColumnIndex;
import org.apache.parquet.internal.column.columnindex.OffsetIndex;
import org.apache.parquet.io.InputFile;
import org.apache.parquet.io.LocalInputFile;
import org.apache.parquet.io.LocalOutputFile;
import org.apache.parquet.schema.MessageType;

/**
 * parquet-java interop peer of fhir-pme's tests. It uses only parquet-java's low-level encryption API
 * (explicit keys, key metadata = UTF-8 key id) and the example {@link Group} object model.
 *
 * <pre>
 * decrypt IN OUT [--key ID=HEX ...] [--aad-prefix TEXT]
 *     Opens IN (encrypted or plaintext) through a key retriever over the given keys, decrypts every
 *     column index, offset index and bloom filter, verifies page CRCs, reads every record and writes
 *     them to OUT as plaintext Parquet (uncompressed) with the same schema and key-value metadata.
 *     Prints a JSON summary of IN on stdout.
 * encrypt IN OUT --footer-key ID=HEX [--column-key PATH:ID=HEX ...] [--algorithm AES_GCM_V1|AES_GCM_CTR_V1]
 *         [--plaintext-footer] [--aad-prefix TEXT] [--no-store-aad-prefix] [--page-v2]
 *         [--row-group-size BYTES] [--page-size BYTES] [--codec NAME] [--bloom] [--no-dictionary]
 *         [--key ID=HEX ...]
 *     Reads IN (plaintext, or encrypted with --key) and writes every record to OUT encrypted: uniform
 *     encryption without --column-key, else only the listed leaf columns with their keys. --page-v2
 *     writes data page V2 (PARQUET_2_0). Row groups default to 64 KiB, pages to 8 KiB, the codec to
 *     SNAPPY; page CRCs are always written; --bloom adds a bloom filter (at most 1 KiB) to every column
 *     chunk. Re-opens OUT with parquet-java and prints a JSON summary
 *     of it on stdout.
 * batch JOBS [--threads N]
 *     Runs many decrypt/encrypt commands in one JVM (see {@link #batch}).
 * </pre>
 *
 * A key is ID=HEX (32, 48 or 64 hex digits) or ID=base64:B64. Exit status 0 on success, 2 on a usage
 * error, 1 on any other failure (stack trace on stderr).
 */
public final class JavaPeer {
  private JavaPeer() {}

  static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  public static void main(String[] args) {
    int code;
    try {
      code = run(args);
    } catch (UsageException e) {
      System.err.println("usage: " + e.getMessage());
      code = 2;
    } catch (Throwable t) {
      t.printStackTrace();
      code = 1;
    }
    System.out.flush();
    System.exit(code);
  }

  static int run(String[] args) throws Exception {
    if (args.length >= 1 && args[0].equals("batch")) return batch(args);
    System.out.println(command(args));
    return 0;
  }

  /** Runs one command and returns its JSON summary. */
  static String command(String[] args) throws Exception {
    if (args.length < 1) throw new UsageException("JavaPeer decrypt|encrypt|batch ... (see the class comment)");
    Options o = Options.parse(args);
    switch (o.command) {
      case "decrypt":
        return decrypt(o);
      case "encrypt":
        return encrypt(o);
      default:
        throw new UsageException("unknown command " + o.command);
    }
  }

  /**
   * {@code batch JOBS [--threads N]}: runs the commands of JOBS (one per line, arguments separated by
   * TAB characters) in one JVM, N at a time (default 2), and prints one JSON line per job in job order:
   * {@code {"job":I,"ok":true,"ms":T,"result":{...}}} or
   * {@code {"job":I,"ok":false,"ms":T,"error":"...","causes":["...", ...]}} (the exception chain).
   * Exit status 0 whenever the jobs file was read, whatever the jobs did.
   */
  static int batch(String[] args) throws Exception {
    int threads = 2;
    if (args.length == 4 && args[2].equals("--threads")) threads = Integer.parseInt(args[3]);
    else if (args.length != 2) throw new UsageException("batch JOBS [--threads N]");
    List<String[]> jobs = new ArrayList<>();
    for (String line : Files.readAllLines(Paths.get(args[1]), StandardCharsets.UTF_8)) {
      if (!line.isEmpty()) jobs.add(line.split("\t", -1));
    }
    ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, threads));
    try {
      List<Future<String>> results = new ArrayList<>();
      for (int i = 0; i < jobs.size(); i++) {
        final int job = i;
        final String[] jobArgs = jobs.get(i);
        results.add(pool.submit(() -> runJob(job, jobArgs)));
      }
      for (Future<String> f : results) {
        System.out.println(f.get());
        System.out.flush();
      }
    } finally {
      pool.shutdownNow();
    }
    return 0;
  }

  static String runJob(int job, String[] args) {
    long start = System.nanoTime();
    String head = "{\"job\":" + job + ",";
    try {
      String result = command(args);
      return head + "\"ok\":true,\"ms\":" + (System.nanoTime() - start) / 1_000_000 + ",\"result\":" + result + "}";
    } catch (Throwable t) {
      List<String> causes = new ArrayList<>();
      for (Throwable c = t; c != null && causes.size() < 10; c = c.getCause()) causes.add(c.toString());
      return head + "\"ok\":false,\"ms\":" + (System.nanoTime() - start) / 1_000_000 + ",\"error\":"
          + str(t.toString()) + ",\"causes\":" + strs(causes) + "}";
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Options
  // ---------------------------------------------------------------------------------------------

  static final class Key {
    final String id;
    final byte[] bytes;

    Key(String id, byte[] bytes) {
      this.id = id;
      this.bytes = bytes;
    }
  }

  static final class Options {
    String command;
    String input;
    String output;
    final Map<String, byte[]> keys = new LinkedHashMap<>();
    Key footerKey;
    final Map<String, Key> columnKeys = new LinkedHashMap<>();
    ParquetCipher algorithm = ParquetCipher.AES_GCM_V1;
    boolean plaintextFooter;
    byte[] aadPrefix;
    boolean storeAadPrefix = true;
    boolean pageV2;
    long rowGroupSize = 64 * 1024;
    int pageSize = 8 * 1024;
    CompressionCodecName codec = CompressionCodecName.SNAPPY;
    boolean bloom;
    boolean dictionary = true;

    static Options parse(String[] args) throws UsageException {
      Options o = new Options();
      List<String> positional = new ArrayList<>();
      for (int i = 0; i < args.length; i++) {
        String a = args[i];
        if (!a.startsWith("--")) {
          positional.add(a);
          continue;
        }
        switch (a) {
          case "--plaintext-footer":
            o.plaintextFooter = true;
            continue;
          case "--no-store-aad-prefix":
            o.storeAadPrefix = false;
            continue;
          case "--page-v2":
            o.pageV2 = true;
            continue;
          case "--bloom":
            o.bloom = true;
            continue;
          case "--no-dictionary":
            o.dictionary = false;
            continue;
          default:
            break;
        }
        if (i + 1 >= args.length) throw new UsageException(a + " needs a value");
        String v = args[++i];
        switch (a) {
          case "--key": {
            Key k = parseKey(v, a);
            o.keys.put(k.id, k.bytes);
            break;
          }
          case "--footer-key":
            o.footerKey = parseKey(v, a);
            break;
          case "--column-key": {
            int colon = v.indexOf(':');
            int eq = v.indexOf('=');
            if (colon <= 0 || (eq >= 0 && colon > eq)) throw new UsageException(a + " expects PATH:ID=HEX");
            o.columnKeys.put(v.substring(0, colon), parseKey(v.substring(colon + 1), a));
            break;
          }
          case "--algorithm":
            try {
              o.algorithm = ParquetCipher.valueOf(v);
            } catch (IllegalArgumentException e) {
              throw new UsageException("unknown algorithm " + v);
            }
            break;
          case "--aad-prefix":
            o.aadPrefix = v.getBytes(StandardCharsets.UTF_8);
            break;
          case "--row-group-size":
            o.rowGroupSize = Long.parseLong(v);
            break;
          case "--page-size":
            o.pageSize = Integer.parseInt(v);
            break;
          case "--codec":
            o.codec = CompressionCodecName.valueOf(v.toUpperCase());
            break;
          default:
            throw new UsageException("unknown option " + a);
        }
      }
      if (positional.size() != 3) throw new UsageException("expected COMMAND IN OUT, got " + positional);
      o.command = positional.get(0);
      o.input = positional.get(1);
      o.output = positional.get(2);
      if (!o.storeAadPrefix && o.aadPrefix == null) {
        throw new UsageException("--no-store-aad-prefix needs --aad-prefix");
      }
      return o;
    }
  }

  static Key parseKey(String spec, String option) throws UsageException {
    int eq = spec.indexOf('=');
    if (eq <= 0) throw new UsageException(option + " expects ID=HEX");
    String id = spec.substring(0, eq);
    String value = spec.substring(eq + 1);
    byte[] bytes;
    try {
      bytes = value.startsWith("base64:")
          ? Base64.getDecoder().decode(value.substring(7))
          : HexFormat.of().parseHex(value);
    } catch (IllegalArgumentException e) {
      throw new UsageException(option + " " + id + ": " + e.getMessage());
    }
    if (bytes.length != 16 && bytes.length != 24 && bytes.length != 32) {
      throw new UsageException(option + " " + id + ": keys are 16, 24 or 32 bytes, got " + bytes.length);
    }
    return new Key(id, bytes);
  }

  // ---------------------------------------------------------------------------------------------
  // Reading
  // ---------------------------------------------------------------------------------------------

  /** Decryption properties over all keys the options name; null when there is nothing to decrypt with. */
  static FileDecryptionProperties decryptionProperties(Options o) {
    Map<String, byte[]> keys = new LinkedHashMap<>(o.keys);
    if (o.footerKey != null) keys.putIfAbsent(o.footerKey.id, o.footerKey.bytes);
    for (Key k : o.columnKeys.values()) keys.putIfAbsent(k.id, k.bytes);
    if (keys.isEmpty() && o.aadPrefix == null) return null;
    DecryptionKeyRetriever retriever = (metadata) -> {
      String id = metadata == null ? "" : new String(metadata, StandardCharsets.UTF_8);
      byte[] key = keys.get(id);
      if (key == null) throw new KeyAccessDeniedException("no key with id \"" + id + "\"");
      return key;
    };
    FileDecryptionProperties.Builder b =
        FileDecryptionProperties.builder().withKeyRetriever(retriever).withPlaintextFilesAllowed();
    if (o.aadPrefix != null) b.withAADPrefix(o.aadPrefix);
    return b.build();
  }

  static ParquetReader<Group> recordReader(InputFile in, FileDecryptionProperties dec) throws IOException {
    ParquetReader.Builder<Group> b = new ParquetReader.Builder<Group>(in) {
      @Override
      protected ReadSupport<Group> getReadSupport() {
        return new GroupReadSupport();
      }
    };
    b.usePageChecksumVerification(true);
    if (dec != null) b.withDecryption(dec);
    return b.build();
  }

  static ParquetReadOptions readOptions(FileDecryptionProperties dec) {
    ParquetReadOptions.Builder b = ParquetReadOptions.builder().usePageChecksumVerification(true);
    if (dec != null) b.withDecryption(dec);
    return b.build();
  }

  /** What a file holds, plus counts of the index structures that were decrypted and parsed. */
  static final class FileSummary {
    String footer;
    String createdBy;
    long rows;
    int rowGroups;
    final List<Integer> rowGroupOrdinals = new ArrayList<>();
    final List<String> columns = new ArrayList<>();
    int columnIndexes;
    int offsetIndexes;
    int bloomFilters;
    int pages;
    MessageType schema;
    Map<String, String> keyValueMetadata;
  }

  static FileSummary inspect(InputFile in, FileDecryptionProperties dec) throws IOException {
    FileSummary s = new FileSummary();
    try (ParquetFileReader r = ParquetFileReader.open(in, readOptions(dec))) {
      ParquetMetadata footer = r.getFooter();
      FileMetaData meta = footer.getFileMetaData();
      s.footer = String.valueOf(meta.getEncryptionType());
      s.createdBy = meta.getCreatedBy();
      s.schema = meta.getSchema();
      s.keyValueMetadata = new LinkedHashMap<>(meta.getKeyValueMetaData());
      // ParquetWriter sets this key itself and refuses to take it from the caller.
      s.keyValueMetadata.remove("writer.model.name");
      for (String[] p : s.schema.getPaths()) s.columns.add(String.join(".", p));
      List<BlockMetaData> blocks = footer.getBlocks();
      s.rowGroups = blocks.size();
      for (BlockMetaData block : blocks) {
        s.rows += block.getRowCount();
        s.rowGroupOrdinals.add(block.getOrdinal());
        for (ColumnChunkMetaData c : block.getColumns()) {
          String path = c.getPath().toDotString();
          if (c.getColumnIndexReference() != null) {
            ColumnIndex ci = r.readColumnIndex(c);
            if (ci == null) throw new IOException("column index of " + path + " unreadable");
            s.columnIndexes++;
          }
          if (c.getOffsetIndexReference() != null) {
            OffsetIndex oi = r.readOffsetIndex(c);
            if (oi == null) throw new IOException("offset index of " + path + " unreadable");
            s.offsetIndexes++;
            s.pages += oi.getPageCount();
          }
          if (c.getBloomFilterOffset() >= 0) {
            BloomFilter bf = r.readBloomFilter(c);
            if (bf == null) throw new IOException("bloom filter of " + path + " unreadable");
            s.bloomFilters++;
          }
        }
      }
    }
    return s;
  }

  // ---------------------------------------------------------------------------------------------
  // Commands
  // ---------------------------------------------------------------------------------------------

  static String decrypt(Options o) throws IOException {
    FileDecryptionProperties dec = decryptionProperties(o);
    InputFile in = new LocalInputFile(Paths.get(o.input));
    FileSummary s = inspect(in, dec);
    long written = copyRecords(in, dec, s, o.output, (b) -> b.withCompressionCodec(CompressionCodecName.UNCOMPRESSED));
    if (written != s.rows) throw new IOException("read " + written + " records, footer says " + s.rows);
    return summaryJson(s, written);
  }

  static String encrypt(Options o) throws IOException, UsageException {
    if (o.footerKey == null) throw new UsageException("encrypt needs --footer-key ID=HEX");
    FileEncryptionProperties.Builder eb = FileEncryptionProperties.builder(o.footerKey.bytes)
        .withFooterKeyMetadata(o.footerKey.id.getBytes(StandardCharsets.UTF_8))
        .withAlgorithm(o.algorithm);
    if (o.plaintextFooter) eb.withPlaintextFooter();
    if (o.aadPrefix != null) {
      eb.withAADPrefix(o.aadPrefix);
      if (!o.storeAadPrefix) eb.withoutAADPrefixStorage();
    }
    if (!o.columnKeys.isEmpty()) {
      Map<ColumnPath, ColumnEncryptionProperties> cols = new LinkedHashMap<>();
      for (Map.Entry<String, Key> e : o.columnKeys.entrySet()) {
        ColumnPath path = ColumnPath.fromDotString(e.getKey());
        cols.put(path, ColumnEncryptionProperties.builder(path)
            .withKey(e.getValue().bytes)
            .withKeyMetaData(e.getValue().id.getBytes(StandardCharsets.UTF_8))
            .build());
      }
      eb.withEncryptedColumns(cols);
    }
    FileEncryptionProperties enc = eb.build();

    Options readKeys = new Options();
    readKeys.keys.putAll(o.keys);
    FileDecryptionProperties dec = decryptionProperties(readKeys);
    InputFile in = new LocalInputFile(Paths.get(o.input));
    FileSummary s = inspect(in, dec);
    for (String c : o.columnKeys.keySet()) {
      if (!s.columns.contains(c)) throw new UsageException("--column-key " + c + ": no such leaf column in " + o.input);
    }
    long written = copyRecords(in, dec, s, o.output, (b) -> b.withEncryption(enc)
        .withCompressionCodec(o.codec)
        .withWriterVersion(o.pageV2 ? WriterVersion.PARQUET_2_0 : WriterVersion.PARQUET_1_0)
        .withRowGroupSize(o.rowGroupSize)
        .withPageSize(o.pageSize)
        .withDictionaryPageSize(o.pageSize)
        .withDictionaryEncoding(o.dictionary)
        .withBloomFilterEnabled(o.bloom)
        .withMaxBloomFilterBytes(1024)
        .withPageWriteChecksumEnabled(true));
    if (written != s.rows) throw new IOException("read " + written + " records, footer says " + s.rows);

    // Re-open the output with parquet-java itself, so a summary always describes a readable file.
    Options all = new Options();
    all.keys.put(o.footerKey.id, o.footerKey.bytes);
    for (Key k : o.columnKeys.values()) all.keys.put(k.id, k.bytes);
    all.aadPrefix = o.storeAadPrefix ? null : o.aadPrefix;
    FileSummary out = inspect(new LocalInputFile(Paths.get(o.output)), decryptionProperties(all));
    return summaryJson(out, written);
  }

  interface Configure {
    ExampleParquetWriter.Builder apply(ExampleParquetWriter.Builder b);
  }

  /** Copies every record of `in` into a new file at `output` (written under a temporary name first). */
  static long copyRecords(InputFile in, FileDecryptionProperties dec, FileSummary s, String output, Configure conf)
      throws IOException {
    Path target = Paths.get(output).toAbsolutePath();
    Path tmp = target.resolveSibling("." + target.getFileName() + ".java-tmp");
    Files.deleteIfExists(tmp);
    long n = 0;
    try (ParquetReader<Group> reader = recordReader(in, dec);
        ParquetWriter<Group> writer = conf.apply(ExampleParquetWriter.builder(new LocalOutputFile(tmp))
                .withType(s.schema)
                .withExtraMetaData(s.keyValueMetadata)
                .withWriteMode(ParquetFileWriter.Mode.OVERWRITE))
            .build()) {
      Group g;
      while ((g = reader.read()) != null) {
        writer.write(g);
        n++;
      }
    } catch (IOException | RuntimeException e) {
      Files.deleteIfExists(tmp);
      throw e;
    }
    Files.move(tmp, target, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    return n;
  }

  // ---------------------------------------------------------------------------------------------
  // JSON
  // ---------------------------------------------------------------------------------------------

  static String summaryJson(FileSummary s, long records) {
    StringBuilder b = new StringBuilder("{");
    b.append("\"footer\":").append(str(s.footer));
    b.append(",\"createdBy\":").append(str(s.createdBy));
    b.append(",\"rows\":").append(s.rows);
    b.append(",\"records\":").append(records);
    b.append(",\"rowGroups\":").append(s.rowGroups);
    b.append(",\"rowGroupOrdinals\":").append(s.rowGroupOrdinals);
    b.append(",\"columns\":").append(strs(s.columns));
    b.append(",\"columnIndexes\":").append(s.columnIndexes);
    b.append(",\"offsetIndexes\":").append(s.offsetIndexes);
    b.append(",\"bloomFilters\":").append(s.bloomFilters);
    b.append(",\"pages\":").append(s.pages);
    return b.append('}').toString();
  }

  static String strs(List<String> values) {
    StringBuilder b = new StringBuilder("[");
    for (int i = 0; i < values.size(); i++) b.append(i > 0 ? "," : "").append(str(values.get(i)));
    return b.append(']').toString();
  }

  static String str(String v) {
    if (v == null) return "null";
    StringBuilder b = new StringBuilder("\"");
    for (char c : v.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}
