// Test-bench launcher for one Elasticsearch node on the codelibs cluster runner.
// Compiled by scripts/stack at install time into the stack cache; not shipped.
//
// usage: java -cp <lib>/*:<classes> StackEsLauncher BASE_PATH SETTINGS_FILE
//   BASE_PATH      runner base folder (node_1/{config,data,logs} below it)
//   SETTINGS_FILE  java.util.Properties file of node settings; must hold http.port.
//                  The key stack.plugin_types (not a node setting) lists plugin
//                  classes on the classpath to load, comma-separated (the nori
//                  plugin StackNoriEsPlugin unless ES_NORI=0).
import static org.codelibs.elasticsearch.runner.ElasticsearchClusterRunner.newConfigs;

import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Properties;
import org.codelibs.elasticsearch.runner.ElasticsearchClusterRunner;

public final class StackEsLauncher {
    private StackEsLauncher() {
    }

    public static void main(final String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: StackEsLauncher BASE_PATH SETTINGS_FILE");
            System.exit(2);
        }
        final Properties props = new Properties();
        try (Reader r = Files.newBufferedReader(Paths.get(args[1]), StandardCharsets.UTF_8)) {
            props.load(r);
        }
        final int httpPort = Integer.parseInt(props.getProperty("http.port"));
        final String clusterName = props.getProperty("cluster.name", "search-pipeline-stack");
        final String pluginTypes = (String) props.remove("stack.plugin_types");

        final ElasticsearchClusterRunner runner = new ElasticsearchClusterRunner();
        // No port probing: the node binds exactly http.port or fails.
        runner.setMaxHttpPort(-1);
        runner.onBuild((index, settings) -> {
            for (final String key : props.stringPropertyNames()) {
                settings.put(key, props.getProperty(key));
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final IOException e) {
                System.err.println("close failed: " + e);
            }
        }, "stack-shutdown"));
        try {
            final ElasticsearchClusterRunner.Configs configs = newConfigs().basePath(args[0]).numOfNode(1)
                    .baseHttpPort(httpPort - 1).clusterName(clusterName);
            if (pluginTypes != null && !pluginTypes.isBlank()) {
                configs.pluginTypes(pluginTypes);
            }
            runner.build(configs);
        } catch (final RuntimeException e) {
            e.printStackTrace();
            // halt, not exit: closing a half-started node from the shutdown
            // hook can hang for many seconds.
            System.out.flush();
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }
        System.out.println("stack: elasticsearch node started on port " + httpPort);
        while (!runner.isClosed()) {
            Thread.sleep(1000);
        }
    }
}
