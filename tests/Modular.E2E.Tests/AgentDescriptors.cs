namespace Modular.E2E.Tests;

/// <summary>
/// A process's open descriptors as /proc/&lt;pid&gt;/fd lists them (fd number -> link target), and the part of them a
/// relayed connection or a proxy holds: UDP and TCP sockets (the inodes its namespace's /proc/net tables list) and
/// eBPF objects (anon_inode:bpf-*). The leak check compares that part; the whole list is kept for the report, because
/// other descriptors (the CLI's calls on the daemon socket, the runtime's own) come and go while the mesh is up.
/// </summary>
internal sealed class AgentDescriptors
{
    private AgentDescriptors(SortedDictionary<int, string> all, IReadOnlyList<string> held)
    {
        All = all;
        Held = held;
    }

    /// <summary>Every open descriptor: fd number -> target.</summary>
    public SortedDictionary<int, string> All { get; }

    /// <summary>The targets of the UDP and TCP sockets and eBPF objects among <see cref="All"/>, sorted.</summary>
    public IReadOnlyList<string> Held { get; }

    public static AgentDescriptors Of(int pid)
    {
        var inet = new HashSet<string>(StringComparer.Ordinal);
        foreach (var table in new[] { "udp", "udp6", "tcp", "tcp6" })
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/net/{table}").Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 9)
                {
                    inet.Add($"socket:[{fields[9]}]");
                }
            }
        }

        var all = new SortedDictionary<int, string>();
        foreach (var fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            try
            {
                if (new FileInfo(fd).LinkTarget is { } target && int.TryParse(Path.GetFileName(fd), out var number))
                {
                    all[number] = target;
                }
            }
            catch (IOException)
            {
                // Closed while we looked.
            }
        }

        var held = all.Values.Where(t => inet.Contains(t) || t.StartsWith("anon_inode:bpf", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        return new AgentDescriptors(all, held);
    }

    /// <summary>The descriptors that differ from <paramref name="before"/>: "+fd target" opened since, "-fd target" closed since.</summary>
    public string DiffFrom(AgentDescriptors before)
    {
        var lines = new List<string>();
        foreach (var (fd, target) in before.All)
        {
            if (!All.TryGetValue(fd, out var now) || now != target)
            {
                lines.Add($"-{fd} {target}");
            }
        }

        foreach (var (fd, target) in All)
        {
            if (!before.All.TryGetValue(fd, out var then) || then != target)
            {
                lines.Add($"+{fd} {target}");
            }
        }

        return $"{before.All.Count} -> {All.Count} descriptors; sockets and eBPF objects {before.Held.Count} -> {Held.Count}\n{string.Join('\n', lines)}";
    }
}
