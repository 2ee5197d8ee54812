using System.Collections.Concurrent;
using System.Reflection;
using Modular.Abstractions.Plugins;

namespace Modular.Testing;

/// <summary>
/// Builds the plugin fixture projects in tests/fixtures (not part of the solution) and lays
/// out plugins folders from them, for tests of plugin discovery at library and process level.
/// Each fixture is built once per process (thread-safe) with the test's own configuration, into
/// a temp folder that is deleted when the process exits; the repo tree is left untouched.
/// </summary>
public static class PluginFixtures
{
    private static readonly ConcurrentDictionary<string, Lazy<string>> Built = new(StringComparer.Ordinal);
    private static readonly string WorkRoot = Path.Combine(Path.GetTempPath(), $"modular-fixtures-{Environment.ProcessId}-{Guid.NewGuid():N}");

    static PluginFixtures()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) => TryDelete(WorkRoot);
    }

    /// <summary>The repository root (the folder holding Modular.sln).</summary>
    public static string RepoRoot => BuiltBinaries.RepoRoot;

    /// <summary>artifacts/plugins: where building the solution lays out the built-in plugins.</summary>
    public static string BuiltInPluginsDir => Path.Combine(RepoRoot, "artifacts", "plugins");

    /// <summary>
    /// Builds tests/fixtures/&lt;fixtureName&gt;/&lt;fixtureName&gt;.csproj (once per process) and returns
    /// its output folder. Throws with the build's output when it fails.
    /// </summary>
    public static string Build(string fixtureName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fixtureName);
        return Built.GetOrAdd(fixtureName, name => new Lazy<string>(() => BuildNow(name), LazyThreadSafetyMode.ExecutionAndPublication)).Value;
    }

    /// <summary>
    /// A fresh temp plugins folder with one sub-folder per fixture (named after it) holding its
    /// build output. The caller deletes it when done.
    /// </summary>
    public static string CreatePluginsDir(params string[] fixtureNames)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"modular-plugins-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        foreach (var name in fixtureNames)
        {
            CopyDirectory(Build(name), Path.Combine(dir, name));
        }

        return dir;
    }

    /// <summary>
    /// Copies the built-in plugins from <see cref="BuiltInPluginsDir"/> into <paramref name="pluginsDir"/>;
    /// throws when they were not built (build the plugin projects or the solution first).
    /// </summary>
    public static void CopyBuiltInPlugins(string pluginsDir)
    {
        var source = BuiltInPluginsDir;
        if (!Directory.Exists(source) || Directory.GetDirectories(source).Length == 0)
        {
            throw new InvalidOperationException($"{source} holds no plugins: build the plugins (dotnet build Modular.sln) first");
        }

        foreach (var plugin in Directory.GetDirectories(source))
        {
            CopyDirectory(plugin, Path.Combine(pluginsDir, Path.GetFileName(plugin)));
        }
    }

    /// <summary>
    /// Rewrites the version in <paramref name="assemblyPath"/>'s reference to Modular.Abstractions, in place: the
    /// assembly then reads as built against that contract version, exactly as the compiler records it.
    /// </summary>
    public static void SetContractReference(string assemblyPath, Version version)
    {
        ArgumentNullException.ThrowIfNull(version);
        var bytes = File.ReadAllBytes(assemblyPath);
        int offset;
        using (var pe = new System.Reflection.PortableExecutable.PEReader(new MemoryStream(bytes)))
        {
            var reader = System.Reflection.Metadata.PEReaderExtensions.GetMetadataReader(pe);
            var handle = reader.AssemblyReferences.Single(h => reader.GetString(reader.GetAssemblyReference(h).Name) == "Modular.Abstractions");
            var row = System.Reflection.Metadata.Ecma335.MetadataTokens.GetRowNumber(handle);

            // An AssemblyRef row starts with MajorVersion, MinorVersion, BuildNumber, RevisionNumber (ushort each).
            offset = pe.PEHeaders.MetadataStartOffset
                + System.Reflection.Metadata.Ecma335.MetadataReaderExtensions.GetTableMetadataOffset(reader, System.Reflection.Metadata.Ecma335.TableIndex.AssemblyRef)
                + ((row - 1) * System.Reflection.Metadata.Ecma335.MetadataReaderExtensions.GetTableRowSize(reader, System.Reflection.Metadata.Ecma335.TableIndex.AssemblyRef));
        }

        ushort[] parts = [(ushort)version.Major, (ushort)Math.Max(version.Minor, 0), (ushort)Math.Max(version.Build, 0), (ushort)Math.Max(version.Revision, 0)];
        for (var i = 0; i < parts.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(offset + (2 * i)), parts[i]);
        }

        File.WriteAllBytes(assemblyPath, bytes);
    }

    private static string BuildNow(string fixtureName)
    {
        var project = Path.Combine(RepoRoot, "tests", "fixtures", fixtureName, fixtureName + ".csproj");
        if (!File.Exists(project))
        {
            throw new FileNotFoundException($"no plugin fixture project {project}", project);
        }

        var output = Path.Combine(WorkRoot, fixtureName, "out");
        var artifacts = Path.Combine(WorkRoot, fixtureName, "build");
        var configuration = typeof(PluginFixtures).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Debug";
        var abstractions = typeof(IPluginFactory).Assembly.Location;

        // Intermediate files go to a private artifacts folder so parallel test processes never
        // share an obj folder, and no build server outlives the test run.
        var arguments = string.Join(' ',
            "build", Quote(project), "-c", configuration, "-o", Quote(output), "--artifacts-path", Quote(artifacts),
            Quote($"-p:ModularAbstractionsPath={abstractions}"), "--disable-build-servers", "-nologo");
        var environment = new Dictionary<string, string>
        {
            ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
            ["DOTNET_NOLOGO"] = "1",
        };
        var result = Shell.TryRun(DotnetPath(), arguments, TimeSpan.FromMinutes(5), environment);
        var mainAssembly = Path.Combine(output, fixtureName + ".dll");
        if (result.ExitCode != 0 || !File.Exists(mainAssembly))
        {
            throw new InvalidOperationException($"building fixture {fixtureName} failed (exit {result.ExitCode}):\n{result.Output}\n{result.Error}");
        }

        return output;
    }

    /// <summary>The dotnet the tests run under (DOTNET_HOST_PATH), else the one on PATH.</summary>
    public static string DotnetPath()
    {
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        return !string.IsNullOrEmpty(host) && File.Exists(host) ? host : "dotnet";
    }

    private static string Quote(string value) => $"\"{value}\"";

    /// <summary>Copies <paramref name="source"/> and everything below it into <paramref name="destination"/> (a plugin folder, a plugins dir).</summary>
    public static void CopyDirectory(string source, string destination)
    {
        Directory.CreateDirectory(destination);
        foreach (var file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(destination, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
