using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;

namespace Modular.Composition;

/// <summary>
/// Picks a plugin folder's main assembly without loading anything: <c>&lt;folder&gt;.dll</c> when
/// present, else the single .dll in the folder that references Modular.Abstractions.
/// </summary>
internal static class PluginAssemblyLocator
{
    private const string ContractAssembly = "Modular.Abstractions";

    /// <summary>The main assembly's full path, or null and the reason there is none.</summary>
    public static (string? Path, string? Error) FindMainAssembly(string folder)
    {
        var byName = Path.Combine(folder, Path.GetFileName(folder) + ".dll");
        if (File.Exists(byName))
        {
            return (byName, null);
        }

        var dlls = Directory.GetFiles(folder, "*.dll");
        if (dlls.Length == 0)
        {
            return (null, $"the folder holds no .dll (expected {Path.GetFileName(byName)} or one assembly referencing {ContractAssembly})");
        }

        Array.Sort(dlls, StringComparer.Ordinal);
        var candidates = new List<string>();
        var unreadable = new List<string>();
        foreach (var dll in dlls)
        {
            var (references, problem) = ReferencesContracts(dll);
            if (problem is not null)
            {
                unreadable.Add($"{Path.GetFileName(dll)}: {problem}");
            }
            else if (references)
            {
                candidates.Add(dll);
            }
        }

        if (candidates.Count == 1)
        {
            return (candidates[0], null);
        }

        if (candidates.Count > 1)
        {
            return (null, $"several assemblies reference {ContractAssembly} ({string.Join(", ", candidates.Select(Path.GetFileName))}); name the main one {Path.GetFileName(byName)}");
        }

        var reason = $"no .dll in the folder references {ContractAssembly}";
        return unreadable.Count > 0 ? (null, $"{reason}; {string.Join("; ", unreadable)}") : (null, reason);
    }

    /// <summary>
    /// The version of Modular.Abstractions <paramref name="path"/> was built against (its assembly reference), read
    /// from metadata without loading it; null when it does not reference the contracts or cannot be read.
    /// </summary>
    public static Version? ContractReference(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var pe = new PEReader(stream);
            if (!pe.HasMetadata)
            {
                return null;
            }

            var reader = pe.GetMetadataReader();
            foreach (var handle in reader.AssemblyReferences)
            {
                var reference = reader.GetAssemblyReference(handle);
                if (reader.StringComparer.Equals(reference.Name, ContractAssembly))
                {
                    return reference.Version;
                }
            }

            return null;
        }
        catch (Exception ex) when (ex is BadImageFormatException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return null;
        }
    }

    private static (bool References, string? Problem) ReferencesContracts(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            using var pe = new PEReader(stream);
            if (!pe.HasMetadata)
            {
                return (false, "not a .NET assembly");
            }

            var reader = pe.GetMetadataReader();
            foreach (var handle in reader.AssemblyReferences)
            {
                if (reader.StringComparer.Equals(reader.GetAssemblyReference(handle).Name, ContractAssembly))
                {
                    return (true, null);
                }
            }

            return (false, null);
        }
        catch (Exception ex) when (ex is BadImageFormatException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return (false, $"not a valid .NET assembly ({ex.Message})");
        }
    }
}
