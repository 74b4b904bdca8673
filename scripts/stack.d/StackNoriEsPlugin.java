// Test-bench plugin: Korean morphological analysis (Lucene's nori) for the
// Elasticsearch 7.10.2 node of scripts/stack. Maven Central has no
// analysis-nori plugin for 7.10.2, but it has the Lucene analyzer of that
// release (org.apache.lucene:lucene-analyzers-nori:8.7.0). The cluster runner
// loads plugin classes from the classpath by name (Configs.pluginTypes), so
// this class makes the Lucene classes usable under the names and settings of
// the official plugin, which production installs (docs/search.md):
//
//   tokenizer nori_tokenizer      decompound_mode (none | discard | mixed, default discard),
//                                 discard_punctuation (default true),
//                                 user_dictionary_rules (inline) or user_dictionary (file
//                                 under the node's config folder)
//   filter    nori_part_of_speech stoptags (POS tags to drop; default: Lucene's set)
//   filter    nori_readingform    Hanja to Hangul reading
//   filter    nori_number         Korean numerals to Arabic numbers
//   analyzer  nori                the tokenizer + part_of_speech + readingform + lowercase
//
// Compiled by scripts/stack at install time into the stack cache; not shipped.
// StackNoriOsPlugin.java is the same for OpenSearch 2.19.1.
import java.io.IOException;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.ko.KoreanAnalyzer;
import org.apache.lucene.analysis.ko.KoreanNumberFilter;
import org.apache.lucene.analysis.ko.KoreanPartOfSpeechStopFilter;
import org.apache.lucene.analysis.ko.KoreanReadingFormFilter;
import org.apache.lucene.analysis.ko.KoreanTokenizer;
import org.apache.lucene.analysis.ko.POS;
import org.apache.lucene.analysis.ko.dict.UserDictionary;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.analysis.AbstractIndexAnalyzerProvider;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.AbstractTokenizerFactory;
import org.elasticsearch.index.analysis.AnalyzerProvider;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

public final class StackNoriEsPlugin extends Plugin implements AnalysisPlugin {

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of("nori_tokenizer", (index, env, name, settings) -> {
            final Options o = Options.read(env, name, settings);
            return new AbstractTokenizerFactory(index, settings, name) {
                @Override
                public Tokenizer create() {
                    return new KoreanTokenizer(KoreanTokenizer.DEFAULT_TOKEN_ATTRIBUTE_FACTORY, o.dictionary, o.mode,
                            false, o.discardPunctuation);
                }
            };
        });
    }

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
                "nori_part_of_speech", (index, env, name, settings) -> {
                    final Set<POS.Tag> tags = Options.stopTags(name, settings);
                    return new AbstractTokenFilterFactory(index, name, settings) {
                        @Override
                        public TokenStream create(final TokenStream in) {
                            return new KoreanPartOfSpeechStopFilter(in, tags);
                        }
                    };
                },
                "nori_readingform", (index, env, name, settings) -> new AbstractTokenFilterFactory(index, name, settings) {
                    @Override
                    public TokenStream create(final TokenStream in) {
                        return new KoreanReadingFormFilter(in);
                    }
                },
                "nori_number", (index, env, name, settings) -> new AbstractTokenFilterFactory(index, name, settings) {
                    @Override
                    public TokenStream create(final TokenStream in) {
                        return new KoreanNumberFilter(in);
                    }
                });
    }

    @Override
    public Map<String, AnalysisProvider<AnalyzerProvider<? extends Analyzer>>> getAnalyzers() {
        return Map.of("nori", (index, env, name, settings) -> {
            final Options o = Options.read(env, name, settings);
            final KoreanAnalyzer analyzer = new KoreanAnalyzer(o.dictionary, o.mode, Options.stopTags(name, settings),
                    false);
            return new AbstractIndexAnalyzerProvider<KoreanAnalyzer>(index, name, settings) {
                @Override
                public KoreanAnalyzer get() {
                    return analyzer;
                }
            };
        });
    }

    /** The settings of nori_tokenizer (and of the nori analyzer), checked. */
    static final class Options {
        final KoreanTokenizer.DecompoundMode mode;
        final UserDictionary dictionary;
        final boolean discardPunctuation;

        private Options(final KoreanTokenizer.DecompoundMode mode, final UserDictionary dictionary,
                final boolean discardPunctuation) {
            this.mode = mode;
            this.dictionary = dictionary;
            this.discardPunctuation = discardPunctuation;
        }

        static Options read(final Environment env, final String name, final Settings settings) {
            final String m = settings.get("decompound_mode");
            KoreanTokenizer.DecompoundMode mode = KoreanTokenizer.DEFAULT_DECOMPOUND;
            if (m != null) {
                try {
                    mode = KoreanTokenizer.DecompoundMode.valueOf(m.toUpperCase(Locale.ROOT));
                } catch (final IllegalArgumentException e) {
                    throw new IllegalArgumentException("[" + name + "] decompound_mode must be none, discard or mixed, not ["
                            + m + "]", e);
                }
            }
            return new Options(mode, dictionary(env, name, settings),
                    settings.getAsBoolean("discard_punctuation", Boolean.TRUE));
        }

        /** user_dictionary_rules (inline lines) or user_dictionary (a file under the config folder); null if neither. */
        static UserDictionary dictionary(final Environment env, final String name, final Settings settings) {
            final List<String> rules = settings.getAsList("user_dictionary_rules", null);
            final String file = settings.get("user_dictionary");
            if (rules != null && file != null) {
                throw new IllegalArgumentException("[" + name + "] set user_dictionary or user_dictionary_rules, not both");
            }
            final String text;
            if (rules != null) {
                text = String.join("\n", rules);
            } else if (file != null) {
                final Path path = env.configFile().resolve(file);
                try {
                    text = Files.readString(path, StandardCharsets.UTF_8);
                } catch (final IOException e) {
                    throw new IllegalArgumentException("[" + name + "] cannot read user_dictionary " + path + ": " + e, e);
                }
            } else {
                return null;
            }
            try {
                return UserDictionary.open(new StringReader(text));
            } catch (final IOException | RuntimeException e) {
                throw new IllegalArgumentException("[" + name + "] bad user dictionary: " + e.getMessage(), e);
            }
        }

        /** stoptags as POS tags (e.g. J, E, SP); Lucene's default set when absent. */
        static Set<POS.Tag> stopTags(final String name, final Settings settings) {
            final List<String> names = settings.getAsList("stoptags", null);
            if (names == null) {
                return KoreanPartOfSpeechStopFilter.DEFAULT_STOP_TAGS;
            }
            final Set<POS.Tag> tags = new HashSet<>();
            for (final String t : names) {
                try {
                    tags.add(POS.resolveTag(t.trim()));
                } catch (final IllegalArgumentException e) {
                    throw new IllegalArgumentException("[" + name + "] unknown part-of-speech tag [" + t + "] in stoptags", e);
                }
            }
            return tags;
        }
    }
}
