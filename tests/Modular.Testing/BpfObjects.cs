namespace Modular.Testing;

/// <summary>
/// The eBPF programs, maps and links a process holds, read from its /proc/&lt;pid&gt;/fdinfo (the kernel lists
/// prog_id, map_id and link_id there). Ids are global, so a test checks that exactly the ones its agent held are gone
/// (`bpftool prog show id N` fails) without being confused by another test's programs.
/// </summary>
public sealed record BpfObjects(IReadOnlyList<int> Programs, IReadOnlyList<int> Maps, IReadOnlyList<int> Links)
{
    /// <summary>What <paramref name="pid"/> holds now.</summary>
    public static BpfObjects HeldBy(int pid)
    {
        var programs = new SortedSet<int>();
        var maps = new SortedSet<int>();
        var links = new SortedSet<int>();
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            string target;
            try
            {
                target = File.ResolveLinkTarget(fd, returnFinalTarget: false)?.FullName ?? "";
                if (!target.Contains("anon_inode:bpf", StringComparison.Ordinal))
                {
                    continue;
                }

                foreach (var line in File.ReadLines($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}"))
                {
                    var parts = line.Split(':', 2, StringSplitOptions.TrimEntries);
                    if (parts.Length == 2 && int.TryParse(parts[1], out var id))
                    {
                        (parts[0] switch { "prog_id" when target.Contains("bpf-prog", StringComparison.Ordinal) => programs, "map_id" => maps, "link_id" => links, _ => null })?.Add(id);
                    }
                }
            }
            catch (IOException)
            {
                // Closed while we looked.
            }
        }

        return new BpfObjects([.. programs], [.. maps], [.. links]);
    }

    /// <summary>
    /// The kernel memory the eBPF programs and maps <paramref name="pid"/> holds are charged for (the "memlock" line of
    /// each one's fdinfo, in bytes): what a proxy's program and maps cost beyond the process's own heap.
    /// </summary>
    public static long MemlockBytesHeldBy(int pid)
    {
        long total = 0;
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            try
            {
                var target = File.ResolveLinkTarget(fd, returnFinalTarget: false)?.FullName ?? "";
                if (!target.Contains("anon_inode:bpf-map", StringComparison.Ordinal) && !target.Contains("anon_inode:bpf-prog", StringComparison.Ordinal))
                {
                    continue;
                }

                foreach (var line in File.ReadLines($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}"))
                {
                    var parts = line.Split(':', 2, StringSplitOptions.TrimEntries);
                    if (parts.Length == 2 && parts[0] == "memlock" && long.TryParse(parts[1], out var bytes))
                    {
                        total += bytes;
                    }
                }
            }
            catch (IOException)
            {
                // Closed while we looked.
            }
        }

        return total;
    }

    /// <summary>Those of these objects the kernel still has (by `bpftool ... show id`), e.g. "prog 12".</summary>
    public IReadOnlyList<string> StillLoaded()
    {
        var alive = new List<string>();
        foreach (var (kind, ids) in new[] { ("prog", Programs), ("map", Maps), ("link", Links) })
        {
            foreach (var id in ids)
            {
                if (Shell.TryRun("bpftool", $"{kind} show id {id}", TimeSpan.FromSeconds(30)).ExitCode == 0)
                {
                    alive.Add($"{kind} {id}");
                }
            }
        }

        return alive;
    }
}
